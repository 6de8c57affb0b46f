-- Atomic admission for one or more uploads of one project, judged in order: each is
-- admitted iff used + reserved + size <= limit for its tenant and for the project,
-- where reserved counts only reservations whose deadline (expires_at + grace) is
-- still ahead, by this server's clock (TIME), on every replica alike.
-- KEYS, 6 per upload: tenant hash, tenant rebuild marker, project hash, project
--       marker, project deadlines (a sorted set: member 'upload|tenant', score the
--       deadline in ms), project generation (a random value that a loss of Redis's
--       data replaces). All share the {project} hash tag (one slot on a Cluster).
-- ARGV: rebuild nonce, marker ttl (ms), idle ttl (s), n uploads, then 9 per upload:
--       upload id, size, tenant limit (-1 = none), tenant used, tenant usage version,
--       project limit (-1 = none), project used, project usage version, deadline (ms);
--       then m snapshots to install first (rebuilds), each: KEYS index of the hash
--       (a tenant's or a project's), its marker nonce ('' = none: a snapshot read
--       without a marker, see install), the time it was read (ms), the project
--       generation it was read under, used, usage version, count c, then
--       c x (upload id, tenant, size, deadline).
-- Returns one verdict per upload, its project's generation last:
--       {'ok', gen} | {'missing', tenant nonce|'', project nonce|'', gen}
--       | {'tenant'|'project', used, reserved, gen}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = tonumber(ARGV[4])

-- Start (or join) a rebuild: the marker must live from before the caller's snapshot
-- until its install. Concurrent rebuilders share the marker's nonce.
local function marker(k)
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2], 'NX')
  return redis.call('GET', k)
end

local function drop(h, f)
  local sz = redis.call('HGET', h, f)
  if sz then
    redis.call('HDEL', h, f)
    redis.call('HINCRBY', h, 'res', 0 - tonumber(sz))
  end
end

-- Install a snapshot of a missing hash (unless someone else installed one already).
-- What changed while the hash was missing is in its journal (apply.lua): a newer usage
-- and the reservations that ended; the snapshot is reconciled with it. A snapshot read
-- after the marker was set must still find the marker (apply.lua deletes it): then
-- nothing at all happened since. One read without a marker (by the upload path's
-- first statement, for a tenant that may be cold) is installed only under the project
-- generation the reader knew before it read (no loss of Redis's data since, which
-- could have taken reservations admitted after the read), and while the journal still
-- covers the time since it was read.
local JOURNAL_COVERS_MS = 60000
local function install(k, nonce, read_ms, gen, used, ver, first, count)
  local h = KEYS[k]
  local is_tenant = (k - 1) % 6 == 0
  local dl = is_tenant and KEYS[k + 4] or KEYS[k + 2]
  local gkey = is_tenant and KEYS[k + 5] or KEYS[k + 3]
  if redis.call('EXISTS', h) == 1 then return end
  if nonce ~= '' and redis.call('GET', KEYS[k + 1]) ~= nonce then return end
  if nonce == '' then
    if now - tonumber(read_ms) > JOURNAL_COVERS_MS then return end
    if gen == '' or redis.call('GET', gkey) ~= gen then return end
  end
  local journal = h .. ':j'
  local jver = redis.call('HGET', journal, 'ver')
  if jver and tonumber(jver) > tonumber(ver) then
    used, ver = redis.call('HGET', journal, 'used'), jver
  end
  local ended = redis.call('EXISTS', journal) == 1
  -- a project's snapshot holds all its pending uploads: written in chunks, summed here
  local total, fields, members = 0, {}, {}
  local function flush()
    if #fields > 0 then redis.call('HSET', h, unpack(fields)) end
    if #members > 0 then redis.call('ZADD', dl, unpack(members)) end
    fields, members = {}, {}
  end
  for j = 0, count - 1 do
    local a = first + j * 4
    local deadline = tonumber(ARGV[a + 3])
    if deadline > now and not (ended and redis.call('HEXISTS', journal, 'x:' .. ARGV[a]) == 1) then
      fields[#fields + 1] = 'r:' .. ARGV[a]
      fields[#fields + 1] = ARGV[a + 2]
      members[#members + 1] = deadline
      members[#members + 1] = ARGV[a] .. '|' .. ARGV[a + 1]
      total = total + tonumber(ARGV[a + 2])
      if #fields >= 1000 then flush() end
    end
  end
  flush()
  redis.call('HSET', h, 'used', used, 'ver', ver, 'res', total)
  redis.call('DEL', KEYS[k + 1], journal)
  if total <= 0 then redis.call('EXPIRE', h, ARGV[3]) end
end

-- Reservations past their deadline stop counting: out of the project's hash and
-- their tenants' (same slot: the tenant's key is the project's prefix + 't:' + id).
local expired = {}
local function expire(p, dl)
  if expired[dl] then return end
  expired[dl] = true
  local gone = redis.call('ZRANGEBYSCORE', dl, '-inf', now)
  if #gone == 0 then return end
  local tprefix = string.sub(p, 1, -2) .. 't:'
  for _, m in ipairs(gone) do
    local sep = string.find(m, '|', 1, true)
    local field = 'r:' .. string.sub(m, 1, sep - 1)
    drop(p, field)
    drop(tprefix .. string.sub(m, sep + 1), field)
  end
  redis.call('ZREMRANGEBYSCORE', dl, '-inf', now)
end

-- Usage mirrored from Postgres: keep whichever of (ours, the caller's) is newer.
local function sync(h, used, ver)
  local cur = tonumber(redis.call('HGET', h, 'ver') or '-1')
  if tonumber(ver) > cur then
    redis.call('HSET', h, 'used', used, 'ver', ver)
    return tonumber(used)
  end
  return tonumber(redis.call('HGET', h, 'used') or '0')
end

-- The project's generation: made (from this call's random nonce) on first use and
-- after Redis lost its data.
local function generation(gkey)
  redis.call('SET', gkey, ARGV[1], 'NX')
  return redis.call('GET', gkey)
end

local function reserve(k, a)
  local tkey, tmark, pkey, pmark, dl = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local gen = generation(KEYS[k + 5])
  local tmissing = redis.call('EXISTS', tkey) == 0
  local pmissing = redis.call('EXISTS', pkey) == 0
  if tmissing or pmissing then
    local tn, pn = '', ''
    if tmissing then tn = marker(tmark) end
    if pmissing then pn = marker(pmark) end
    return {'missing', tn, pn, gen}
  end
  local field = 'r:' .. ARGV[a]
  local member = ARGV[a] .. '|' .. string.sub(tkey, #pkey + 2)
  local size = tonumber(ARGV[a + 1])
  local tused = sync(tkey, ARGV[a + 3], ARGV[a + 4])
  local pused = sync(pkey, ARGV[a + 6], ARGV[a + 7])
  local tmine = redis.call('HGET', tkey, field)
  local pmine = redis.call('HGET', pkey, field)
  -- reserved by everyone else (a rebuild may already have counted this upload)
  local tother = tonumber(redis.call('HGET', tkey, 'res') or '0') - tonumber(tmine or '0')
  local pother = tonumber(redis.call('HGET', pkey, 'res') or '0') - tonumber(pmine or '0')
  local tlimit = tonumber(ARGV[a + 2])
  local plimit = tonumber(ARGV[a + 5])

  local verdict = nil
  if tlimit >= 0 and tused + tother + size > tlimit then
    verdict = {'tenant', tused, tother, gen}
  elseif plimit >= 0 and pused + pother + size > plimit then
    verdict = {'project', pused, pother, gen}
  end
  if verdict then
    drop(tkey, field)
    drop(pkey, field)
    redis.call('ZREM', dl, member)
    return verdict
  end
  if not tmine then
    redis.call('HSET', tkey, field, ARGV[a + 1]); redis.call('HINCRBY', tkey, 'res', ARGV[a + 1])
  end
  if not pmine then
    redis.call('HSET', pkey, field, ARGV[a + 1]); redis.call('HINCRBY', pkey, 'res', ARGV[a + 1])
  end
  redis.call('ZADD', dl, ARGV[a + 8], member)
  redis.call('PERSIST', tkey)
  redis.call('PERSIST', pkey)
  return {'ok', gen}
end

local a = 5 + n * 9
local m = tonumber(ARGV[a])
a = a + 1
for _ = 1, m do
  local count = tonumber(ARGV[a + 6])
  install(tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5],
    a + 7, count)
  a = a + 7 + count * 4
end

local out = {}
for i = 0, n - 1 do
  local k = i * 6 + 1
  expire(KEYS[k + 2], KEYS[k + 4])
  out[i + 1] = reserve(k, 5 + i * 9)
end
return out
