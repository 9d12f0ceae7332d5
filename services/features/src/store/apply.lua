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
-- Exactly-once: a position at or below the stored one may have been applied: look it up
-- (marks come sorted by source and position, so consecutive ones share a bitmap: one
-- BITFIELD_RO per bitmap and up to 2000 positions; Lua's unpack takes at most ~8000 values).
local dups = {}
local function seen_key(s, block) return p .. 'seen:' .. sname[s] .. ':' .. string.format('%d', block) end
local ops, at = {}, {}
local cur_s, cur_block = nil, nil
local function check_ops()
  if #at > 0 then
    local got = redis.call('BITFIELD_RO', seen_key(cur_s, cur_block), unpack(ops))
    for j = 1, #at do
      if got[j] == 1 then
        dups[#dups + 1] = ARGV[at[j]]
        dups[#dups + 1] = ARGV[at[j] + 1]
      end
    end
    ops, at = {}, {}
  end
end
for k = 0, nmarks - 1 do
  local a = marks + 2 * k
  local s = tonumber(ARGV[a]) + 1
  local q = tonumber(ARGV[a + 1])
  if q <= spos[s] then
    local block = math.floor(q / 65536)
    if s ~= cur_s or block ~= cur_block or #at >= 2000 then
      check_ops()
      cur_s, cur_block = s, block
    end
    ops[#ops + 1] = 'GET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = q % 65536
    at[#at + 1] = a
  end
end
check_ops()
if #dups > 0 then return dups end
-- Remember the applied positions (bitmaps of 65536 positions, BITFIELD in chunks).
local function flush_ops()
  if #ops > 0 then
    local key = seen_key(cur_s, cur_block)
    redis.call('BITFIELD', key, unpack(ops))
    redis.call('EXPIRE', key, dedup_ttl)
    ops = {}
  end
end
cur_s, cur_block = nil, nil
for k = 0, nmarks - 1 do
  local s = tonumber(ARGV[marks + 2 * k]) + 1
  local q = tonumber(ARGV[marks + 2 * k + 1])
  local block = math.floor(q / 65536)
  if s ~= cur_s or block ~= cur_block or #ops >= 6000 then
    flush_ops()
    cur_s, cur_block = s, block
  end
  ops[#ops + 1] = 'SET'; ops[#ops + 1] = 'u1'; ops[#ops + 1] = q % 65536; ops[#ops + 1] = 1
end
flush_ops()
-- Increments: per product one HMGET of its sum fields and touched bucket fields, one HSET of
-- the changed ones and the SET of its read view (three calls per product, whatever the number
-- of counters and windows). A bucket field that did not exist yet files the product in the
-- bucket's due schedule (collected here, one SADD per schedule at the end) and refreshes the
-- key's expiry (so both happen at most once per product and bucket).
local sumcol = {}   -- sumcol[w][c]: column of the sum of counter c in window w
for w = 1, nw do
  sumcol[w] = {}
  for c = 1, #counters do sumcol[w][c] = (c - 1) * nw + w end
end
local nsums = #allsums
local due_members, due_keys = {}, {}
local names, deltas, dues = {}, {}, {}
-- Bucket field names and schedule names, built once per batch (products share buckets).
local bfield, bdue = {}, {}
for col = 1, #allsums do bfield[col] = {} end
for w = 1, nw do bdue[w] = {} end
for k = 1, nsums do names[k] = allsums[k] end
local nprod = tonumber(ARGV[i]); i = i + 1
for _ = 1, nprod do
  local prod = ARGV[i]
  local ninc = tonumber(ARGV[i + 1]); i = i + 2
  local key = p .. 'p:' .. prod
  for k = 1, nsums do deltas[k] = 0 end
  local nn = nsums
  for _ = 1, ninc do
    -- The caller sums per (window, counter, bucket): each bucket field appears once.
    local w = tonumber(ARGV[i]) + 1
    local c = tonumber(ARGV[i + 1]) + 1
    local bs = ARGV[i + 2]
    local delta = tonumber(ARGV[i + 3])
    i = i + 4
    local dk = bdue[w][bs]
    if dk == nil then
      local due = tonumber(bs) + wn[w]
      if due > wlimit[w] then dk = wname[w] .. ':' .. string.format('%d', due) else dk = false end
      bdue[w][bs] = dk
    end
    if dk then
      local col = sumcol[w][c]
      deltas[col] = deltas[col] + delta
      nn = nn + 1
      local f = bfield[col][bs]
      if not f then
        f = allsums[col] .. ':' .. bs
        bfield[col][bs] = f
      end
      names[nn] = f
      deltas[nn] = delta
      dues[nn] = dk
    end
  end
  if nn > nsums then
    local view = {}
    local from = 1
    local new_bucket = false
    while from <= nn do
      local to = math.min(from + 2999, nn)
      local old = redis.call('HMGET', key, unpack(names, from, to))
      local pairs_ = {}
      for k = from, to do
        local v = old[k - from + 1]
        local d = deltas[k]
        local nv
        if d ~= 0 then
          nv = string.format('%d', (tonumber(v) or 0) + d)
          pairs_[#pairs_ + 1] = names[k]
          pairs_[#pairs_ + 1] = nv
        else
          nv = v or '0'
        end
        if k <= nsums then
          view[k] = nv
        elseif not v then
          new_bucket = true
          local dk = dues[k]
          local m = due_members[dk]
          if not m then
            m = {}
            due_members[dk] = m
            due_keys[#due_keys + 1] = dk
          end
          m[#m + 1] = prod
        end
      end
      if #pairs_ > 0 then redis.call('HSET', key, unpack(pairs_)) end
      from = to + 1
    end
    if new_bucket then redis.call('EXPIRE', key, key_ttl) end
    redis.call('SET', p .. 's:' .. prod, table.concat(view, ','), 'EX', key_ttl)
  end
end
for _, dk in ipairs(due_keys) do
  local m = due_members[dk]
  local key = p .. 'due:' .. dk
  for from = 1, #m, 4000 do
    redis.call('SADD', key, unpack(m, from, math.min(from + 3999, #m)))
  end
  redis.call('EXPIRE', key, due_ttl)
end
for k = 1, ns do
  if smax[k] > spos[k] then redis.call('HSET', meta, 'pos:' .. sname[k], string.format('%d', smax[k])) end
end
return {}
