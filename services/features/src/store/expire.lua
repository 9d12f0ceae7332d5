-- Moves every window of the features store to the current bucket: closes it for late
-- increments, then, for each due bucket not processed yet, subtracts every scheduled
-- product's bucket count from its window sum and deletes the bucket. Bounded by a budget of
-- products (and empty schedules) per call; atomic per call, so a crash never subtracts twice.
-- ARGV: prefix, budget, now_ms, ncounters, counter names..., nwindows, (name, buckets, current)...
-- Returns {expired, complete (1/0)}.
local p = ARGV[1]
local budget = tonumber(ARGV[2])
local now = ARGV[3]
local meta = p .. 'meta'
local i = 4
local counters = {}
for k = 1, tonumber(ARGV[i]) do counters[k] = ARGV[i + k] end
i = i + #counters + 1
local nw = tonumber(ARGV[i]); i = i + 1
local expired, complete = 0, 1
for _ = 1, nw do
  local w, n, cur = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local closed = tonumber(redis.call('HGET', meta, 'closed:' .. w) or cur)
  if cur > closed then closed = cur end
  redis.call('HSET', meta, 'closed:' .. w, string.format('%d', closed))
  local done = tonumber(redis.call('HGET', meta, 'done:' .. w) or closed)
  while done < closed do
    if budget <= 0 then complete = 0; break end
    local d = done + 1
    local ds = string.format('%d', d)
    local bs = string.format('%d', d - n)
    local dk = p .. 'due:' .. w .. ':' .. ds
    local members = redis.call('SPOP', dk, budget)
    budget = budget - math.max(#members, 1)
    for _, prod in ipairs(members) do
      local key = p .. 'p:' .. prod
      local fields = {}
      for c = 1, #counters do fields[c] = counters[c] .. ':' .. w .. ':' .. bs end
      local vals = redis.call('HMGET', key, unpack(fields))
      local del = {}
      for c = 1, #counters do
        local v = vals[c]
        if v then
          local sum = counters[c] .. ':' .. w
          if redis.call('HINCRBY', key, sum, -tonumber(v)) == 0 then del[#del + 1] = sum end
          del[#del + 1] = fields[c]
        end
      end
      if #del > 0 then redis.call('HDEL', key, unpack(del)) end
      expired = expired + 1
    end
    if redis.call('EXISTS', dk) == 0 then
      done = d
    else
      complete = 0
      break
    end
  end
  redis.call('HSET', meta, 'done:' .. w, string.format('%d', done))
  if done < closed then complete = 0 end
end
if complete == 1 then
  local prev = tonumber(redis.call('HGET', meta, 'as_of') or '0')
  if tonumber(now) > prev then redis.call('HSET', meta, 'as_of', now) end
end
return {expired, complete}
