-- Atomic admission for one or more uploads, judged in order: each is admitted iff
-- used + reserved + size <= limit for its tenant and for its project, where reserved
-- counts only reservations whose deadline (expires_at + grace) is still ahead, by this
-- server's clock (TIME), on every replica alike.
-- Every key the script touches is in KEYS: Redis Cluster routes the call by them (one
-- call per project there: all of a project's keys share its {project} hash tag, one
-- slot), and stricter servers refuse a script that touches a key it did not declare.
-- KEYS, 7 per upload: tenant hash, tenant rebuild marker, tenant deadlines (a sorted
--       set: member the upload id, score its deadline in ms), project hash, project
--       marker, project deadlines (member 'upload|tenant'), project generation (see
--       generation); then the journal of each hash to install (see install).
-- ARGV: rebuild nonce, marker ttl (ms), idle ttl (s), n uploads, then 9 per upload:
--       upload id, size, tenant limit (-1 = none), tenant used, tenant usage version,
--       project limit (-1 = none), project used, project usage version, deadline (ms);
--       then m snapshots to install first (rebuilds), each: KEYS index of the hash
--       (a tenant's or a project's), KEYS index of its journal, its marker nonce
--       ('' = none: a snapshot read without a marker, see install), the time it was
--       read (ms), the project generation it was read under (the marker's, or known
--       before the read), used, usage version, count c, then c x (upload id, tenant,
--       size, deadline).
-- Returns one verdict per upload, its project's generation last:
--       {'ok', gen} | {'missing', tenant nonce|'', project nonce|'', gen}
--       | {'tenant'|'project', used, reserved, gen}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = tonumber(ARGV[4])
local PER_UPLOAD = 7

-- The project's generation: '<random>/<run_id>', the run_id of the Redis process that
-- holds the project's keys. Made on first use, and made anew when the keys are found
-- in another process: after a loss of Redis's data (restart, flush: the key is gone),
-- and after a failover or a restart from disk, where the keys survived but may miss
-- the last writes (replication and fsync are asynchronous). Every hash carries the
-- generation it was built under (field 'g'); a hash of another generation is not
-- trusted: it is deleted, with its deadlines, and rebuilt from Postgres.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
local generations = {}
local function generation(gkey)
  local g = generations[gkey]
  if g then return g end
  local suffix = '/' .. run_id
  g = redis.call('GET', gkey)
  if not g or string.sub(g, -#suffix) ~= suffix then
    g = ARGV[1] .. suffix
    redis.call('SET', gkey, g)
  end
  generations[gkey] = g
  return g
end

local function valid(h, dl, gen)
  if redis.call('EXISTS', h) == 0 then return false end
  if redis.call('HGET', h, 'g') == gen then return true end
  redis.call('DEL', h, dl)
  return false
end

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

-- Install a snapshot of a missing hash (unless someone else installed one already),
-- with its deadlines (rewritten: they belong to the hash). Only under the generation
-- the snapshot was read under: within one generation nothing admitted was lost.
-- What changed while the hash was missing is in its journal (apply.lua): a newer usage
-- and the reservations that ended; the snapshot is reconciled with it. A snapshot read
-- after the marker was set must still find the marker (apply.lua deletes it): then
-- nothing at all happened since. One read without a marker (by the upload path's
-- first statement, for a tenant that may be cold) is installed only under the project
-- generation the reader knew before it read (no loss of Redis's data since, which
-- could have taken reservations admitted after the read), and while the journal still
-- covers the time since it was read.
local JOURNAL_COVERS_MS = 60000
local function install(k, jk, nonce, read_ms, gen, used, ver, first, count)
  local h, journal, dl = KEYS[k], KEYS[jk], KEYS[k + 2]
  local is_tenant = (k - 1) % PER_UPLOAD == 0
  local current = generation(is_tenant and KEYS[k + 6] or KEYS[k + 3])
  if gen ~= current or valid(h, dl, current) then return end
  if nonce ~= '' and redis.call('GET', KEYS[k + 1]) ~= nonce then return end
  if nonce == '' and now - tonumber(read_ms) > JOURNAL_COVERS_MS then return end
  local jver = redis.call('HGET', journal, 'ver')
  if jver and tonumber(jver) > tonumber(ver) then
    used, ver = redis.call('HGET', journal, 'used'), jver
  end
  local ended = redis.call('EXISTS', journal) == 1
  redis.call('DEL', dl)
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
      members[#members + 1] = is_tenant and ARGV[a] or (ARGV[a] .. '|' .. ARGV[a + 1])
      total = total + tonumber(ARGV[a + 2])
      if #fields >= 1000 then flush() end
    end
  end
  flush()
  redis.call('HSET', h, 'used', used, 'ver', ver, 'res', total, 'g', current)
  redis.call('DEL', KEYS[k + 1], journal)
  if total <= 0 then redis.call('EXPIRE', h, ARGV[3]) end
end

-- Reservations past their deadline stop counting: out of the hash whose deadlines
-- they are (a tenant's members are upload ids, a project's 'upload|tenant').
local expired = {}
local function expire(h, dl, is_project)
  if expired[dl] then return end
  expired[dl] = true
  local gone = redis.call('ZRANGEBYSCORE', dl, '-inf', now)
  if #gone == 0 then return end
  for _, m in ipairs(gone) do
    if is_project then m = string.sub(m, 1, string.find(m, '|', 1, true) - 1) end
    drop(h, 'r:' .. m)
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

local function reserve(k, a)
  local tkey, tmark, tdl = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local pkey, pmark, pdl = KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  local gen = generation(KEYS[k + 6])
  local tmissing = not valid(tkey, tdl, gen)
  local pmissing = not valid(pkey, pdl, gen)
  if tmissing or pmissing then
    local tn, pn = '', ''
    if tmissing then tn = marker(tmark) end
    if pmissing then pn = marker(pmark) end
    return {'missing', tn, pn, gen}
  end
  local id = ARGV[a]
  local field = 'r:' .. id
  local member = id .. '|' .. string.sub(tkey, #pkey + 2)
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
    redis.call('ZREM', tdl, id)
    redis.call('ZREM', pdl, member)
    return verdict
  end
  if not tmine then
    redis.call('HSET', tkey, field, ARGV[a + 1]); redis.call('HINCRBY', tkey, 'res', ARGV[a + 1])
  end
  if not pmine then
    redis.call('HSET', pkey, field, ARGV[a + 1]); redis.call('HINCRBY', pkey, 'res', ARGV[a + 1])
  end
  redis.call('ZADD', tdl, ARGV[a + 8], id)
  redis.call('ZADD', pdl, ARGV[a + 8], member)
  redis.call('PERSIST', tkey)
  redis.call('PERSIST', pkey)
  return {'ok', gen}
end

local a = 5 + n * 9
local m = tonumber(ARGV[a])
a = a + 1
for _ = 1, m do
  local count = tonumber(ARGV[a + 7])
  install(tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5], ARGV[a + 6], a + 8, count)
  a = a + 8 + count * 4
end

local out = {}
for i = 0, n - 1 do
  local k = i * PER_UPLOAD + 1
  expire(KEYS[k], KEYS[k + 2], false)
  expire(KEYS[k + 3], KEYS[k + 5], true)
  out[i + 1] = reserve(k, 5 + i * 9)
end
return out
