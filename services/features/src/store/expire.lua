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
local wnames = {}
for k = 1, nw do wnames[k] = ARGV[i + 3 * (k - 1)] end
-- Every window sum, column order; `s:<product>` is their read view (see apply.lua).
local allsums, sumidx = {}, {}
for c = 1, #counters do
  for k = 1, nw do
    allsums[#allsums + 1] = counters[c] .. ':' .. wnames[k]
    sumidx[allsums[#allsums]] = #allsums
  end
end
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
      for k = 1, #allsums do fields[#counters + k] = allsums[k] end
      local vals = redis.call('HMGET', key, unpack(fields))
      local sums = {}
      for k = 1, #allsums do sums[k] = tonumber(vals[#counters + k]) or 0 end
      local del, set = {}, {}
      for c = 1, #counters do
        local v = vals[c]
        if v then
          local k = sumidx[counters[c] .. ':' .. w]
          sums[k] = sums[k] - tonumber(v)
          if sums[k] == 0 then
            del[#del + 1] = allsums[k]
          else
            set[#set + 1] = allsums[k]; set[#set + 1] = string.format('%d', sums[k])
          end
          del[#del + 1] = fields[c]
        end
      end
      if #set > 0 then redis.call('HSET', key, unpack(set)) end
      if #del > 0 then
        redis.call('HDEL', key, unpack(del))
        local view, any = {}, false
        for k = 1, #allsums do
          view[k] = string.format('%d', sums[k])
          if sums[k] ~= 0 then any = true end
        end
        if any then
          redis.call('SET', p .. 's:' .. prod, table.concat(view, ','), 'KEEPTTL')
        else
          redis.call('DEL', p .. 's:' .. prod)
        end
      end
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
