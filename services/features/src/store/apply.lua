-- Applies one batch of the features updater atomically: exactly-once check of the bus
-- positions, window bucket and sum increments, due schedules, positions.
-- ARGV: prefix, key_ttl, due_ttl, dedup_ttl,
--   ncounters, counter names...,
--   nwindows, (name, buckets, current bucket)...,
--   nsources, (name, highest position in the batch)...,
--   nmarks, (source index, position)...            -- one per hit
--   nproducts, (product, nincrements, (window, counter, bucket, delta)...)...
-- Returns {} when applied, else the flat list {source index, position, ...} of marks that
-- were applied before (nothing is written then; the caller drops those hits and retries).
local p = ARGV[1]
local key_ttl, due_ttl, dedup_ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local meta = p .. 'meta'
local i = 5
local counters = {}
for k = 1, tonumber(ARGV[i]) do counters[k] = ARGV[i + k] end
i = i + #counters + 1
local wname, wn, wlimit = {}, {}, {}
local nw = tonumber(ARGV[i]); i = i + 1
for k = 1, nw do
  wname[k] = ARGV[i]; wn[k] = tonumber(ARGV[i + 1])
  local cur = tonumber(ARGV[i + 2]); i = i + 3
  redis.call('HSETNX', meta, 'closed:' .. wname[k], cur)
  redis.call('HSETNX', meta, 'done:' .. wname[k], cur)
  local closed = tonumber(redis.call('HGET', meta, 'closed:' .. wname[k]))
  if closed > cur then wlimit[k] = closed else wlimit[k] = cur end
end
-- Every window sum of a product, column order (counter-major); the read view
-- `s:<product>` holds their values joined by commas (one MGET reads a whole batch).
local allsums = {}
for c = 1, #counters do
  for w = 1, nw do allsums[#allsums + 1] = counters[c] .. ':' .. wname[w] end
end
local sname, spos, smax = {}, {}, {}
local ns = tonumber(ARGV[i]); i = i + 1
for k = 1, ns do
  sname[k] = ARGV[i]; smax[k] = tonumber(ARGV[i + 1]); i = i + 2
  spos[k] = tonumber(redis.call('HGET', meta, 'pos:' .. sname[k]) or '0')
end
local nmarks = tonumber(ARGV[i]); i = i + 1
local marks = i
i = i + 2 * nmarks
-- Exactly-once: a position at or below the stored one may have been applied: look it up.
local dups = {}
for k = 0, nmarks - 1 do
  local s = tonumber(ARGV[marks + 2 * k]) + 1
  local q = tonumber(ARGV[marks + 2 * k + 1])
  if q <= spos[s] then
    if redis.call('GETBIT', p .. 'seen:' .. sname[s] .. ':' .. math.floor(q / 65536), q % 65536) == 1 then
      dups[#dups + 1] = ARGV[marks + 2 * k]
      dups[#dups + 1] = ARGV[marks + 2 * k + 1]
    end
  end
end
if #dups > 0 then return dups end
-- Remember the applied positions (bitmaps of 65536 positions, BITFIELD in chunks).
local ops = {}
local function flush_ops(key)
  if #ops > 0 then
    redis.call('BITFIELD', key, unpack(ops))
    redis.call('EXPIRE', key, dedup_ttl)
    ops = {}
  end
end
local cur_key = nil
for k = 0, nmarks - 1 do
  local s = tonumber(ARGV[marks + 2 * k]) + 1
  local q = tonumber(ARGV[marks + 2 * k + 1])
  local key = p .. 'seen:' .. sname[s] .. ':' .. math.floor(q / 65536)
  if key ~= cur_key or #ops >= 4000 then
    if cur_key then flush_ops(cur_key) end
    cur_key = key
  end
  ops[#ops + 1] = 'SET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = q % 65536; ops[#ops + 1] = 1
end
if cur_key then flush_ops(cur_key) end
-- Increments: per product one HMGET of the touched sum and bucket fields and one HSET of
-- their new values (two calls per product, whatever the number of counters and windows); a
-- bucket field that did not exist yet files the product in the bucket's due schedule and
-- refreshes the key's expiry (so both happen at most once per product and bucket).
local due_seen = {}
local nprod = tonumber(ARGV[i]); i = i + 1
for _ = 1, nprod do
  local prod = ARGV[i]
  local ninc = tonumber(ARGV[i + 1]); i = i + 2
  local key = p .. 'p:' .. prod
  local names, deltas, dues, index = {}, {}, {}, {}
  for k = 1, #allsums do
    names[k] = allsums[k]; deltas[k] = 0; index[allsums[k]] = k
  end
  for _ = 1, ninc do
    local w = tonumber(ARGV[i]) + 1
    local c = tonumber(ARGV[i + 1]) + 1
    local bs = ARGV[i + 2]
    local delta = tonumber(ARGV[i + 3])
    i = i + 4
    local due = tonumber(bs) + wn[w]
    if due > wlimit[w] then
      local sum = counters[c] .. ':' .. wname[w]
      for _, f in ipairs({sum, sum .. ':' .. bs}) do
        local at = index[f]
        if at then
          deltas[at] = deltas[at] + delta
        else
          names[#names + 1] = f
          deltas[#names] = delta
          index[f] = #names
          if f ~= sum then dues[#names] = p .. 'due:' .. wname[w] .. ':' .. string.format('%d', due) end
        end
      end
    end
  end
  local view = {}
  local from = 1
  while from <= #names do
    local to = math.min(from + 999, #names)
    local old = redis.call('HMGET', key, unpack(names, from, to))
    local pairs_ = {}
    local new_bucket = false
    for k = from, to do
      local v = old[k - from + 1]
      local nv = (tonumber(v) or 0) + deltas[k]
      if k <= #allsums then view[k] = string.format('%d', nv) end
      if deltas[k] ~= 0 then
        pairs_[#pairs_ + 1] = names[k]
        pairs_[#pairs_ + 1] = string.format('%d', nv)
      end
      if not v and dues[k] then
        new_bucket = true
        local dk = dues[k]
        redis.call('SADD', dk, prod)
        if not due_seen[dk] then
          due_seen[dk] = true
          redis.call('EXPIRE', dk, due_ttl)
        end
      end
    end
    if #pairs_ > 0 then redis.call('HSET', key, unpack(pairs_)) end
    if new_bucket then redis.call('EXPIRE', key, key_ttl) end
    from = to + 1
  end
  if #names > #allsums then
    redis.call('SET', p .. 's:' .. prod, table.concat(view, ','), 'EX', key_ttl)
  end
end
for k = 1, ns do
  if smax[k] > spos[k] then redis.call('HSET', meta, 'pos:' .. sname[k], string.format('%d', smax[k])) end
end
return {}
