-- Atomic admission: admit iff used + reserved + size <= limit for the tenant and the
-- project. KEYS: tenant hash, tenant rebuild marker, project hash, project marker
-- (all share the {project} hash tag, so this works on Redis Cluster).
-- ARGV: upload id, size, tenant limit (-1 = none), tenant used, tenant usage version,
--       project limit (-1 = none), project used, project usage version,
--       rebuild nonce, marker ttl (ms)
-- Returns {'ok'} | {'missing', tenant nonce|'', project nonce|''}
--       | {'tenant'|'project', used, reserved}
local field = 'r:' .. ARGV[1]
local size = tonumber(ARGV[2])
local tmissing = redis.call('EXISTS', KEYS[1]) == 0
local pmissing = redis.call('EXISTS', KEYS[3]) == 0
if tmissing or pmissing then
  -- Start (or join) a rebuild: the marker must live from before the caller's
  -- snapshot until its init. Concurrent rebuilders share the marker's nonce.
  local function marker(k)
    redis.call('SET', k, ARGV[9], 'PX', ARGV[10], 'NX')
    return redis.call('GET', k)
  end
  local tn, pn = '', ''
  if tmissing then tn = marker(KEYS[2]) end
  if pmissing then pn = marker(KEYS[4]) end
  return {'missing', tn, pn}
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

local tused = sync(KEYS[1], ARGV[4], ARGV[5])
local pused = sync(KEYS[3], ARGV[7], ARGV[8])
local tmine = redis.call('HGET', KEYS[1], field)
local pmine = redis.call('HGET', KEYS[3], field)
-- reserved by everyone else (a rebuild may already have counted this upload)
local tother = tonumber(redis.call('HGET', KEYS[1], 'res') or '0') - tonumber(tmine or '0')
local pother = tonumber(redis.call('HGET', KEYS[3], 'res') or '0') - tonumber(pmine or '0')
local tlimit = tonumber(ARGV[3])
local plimit = tonumber(ARGV[6])

local verdict = nil
if tlimit >= 0 and tused + tother + size > tlimit then
  verdict = {'tenant', tused, tother}
elseif plimit >= 0 and pused + pother + size > plimit then
  verdict = {'project', pused, pother}
end
if verdict then
  if tmine then redis.call('HDEL', KEYS[1], field); redis.call('HINCRBY', KEYS[1], 'res', 0 - tonumber(tmine)) end
  if pmine then redis.call('HDEL', KEYS[3], field); redis.call('HINCRBY', KEYS[3], 'res', 0 - tonumber(pmine)) end
  return verdict
end
if not tmine then
  redis.call('HSET', KEYS[1], field, ARGV[2]); redis.call('HINCRBY', KEYS[1], 'res', ARGV[2])
end
if not pmine then
  redis.call('HSET', KEYS[3], field, ARGV[2]); redis.call('HINCRBY', KEYS[3], 'res', ARGV[2])
end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[3])
return {'ok'}
