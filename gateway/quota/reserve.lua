-- Atomic admission for one or more uploads of one project, judged in order: each is
-- admitted iff used + reserved + size <= limit for its tenant and for the project.
-- KEYS, 4 per upload: tenant hash, tenant rebuild marker, project hash, project marker
-- (all share the {project} hash tag, so this works on Redis Cluster).
-- ARGV: rebuild nonce, marker ttl (ms), then 8 per upload: upload id, size,
--       tenant limit (-1 = none), tenant used, tenant usage version,
--       project limit (-1 = none), project used, project usage version.
-- Returns one verdict per upload: {'ok'} | {'missing', tenant nonce|'', project nonce|''}
--       | {'tenant'|'project', used, reserved}

-- Start (or join) a rebuild: the marker must live from before the caller's snapshot
-- until its init. Concurrent rebuilders share the marker's nonce.
local function marker(k)
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2], 'NX')
  return redis.call('GET', k)
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

local function reserve(tkey, tmark, pkey, pmark, a)
  local tmissing = redis.call('EXISTS', tkey) == 0
  local pmissing = redis.call('EXISTS', pkey) == 0
  if tmissing or pmissing then
    local tn, pn = '', ''
    if tmissing then tn = marker(tmark) end
    if pmissing then pn = marker(pmark) end
    return {'missing', tn, pn}
  end
  local field = 'r:' .. ARGV[a]
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
    verdict = {'tenant', tused, tother}
  elseif plimit >= 0 and pused + pother + size > plimit then
    verdict = {'project', pused, pother}
  end
  if verdict then
    if tmine then redis.call('HDEL', tkey, field); redis.call('HINCRBY', tkey, 'res', 0 - tonumber(tmine)) end
    if pmine then redis.call('HDEL', pkey, field); redis.call('HINCRBY', pkey, 'res', 0 - tonumber(pmine)) end
    return verdict
  end
  if not tmine then
    redis.call('HSET', tkey, field, ARGV[a + 1]); redis.call('HINCRBY', tkey, 'res', ARGV[a + 1])
  end
  if not pmine then
    redis.call('HSET', pkey, field, ARGV[a + 1]); redis.call('HINCRBY', pkey, 'res', ARGV[a + 1])
  end
  redis.call('PERSIST', tkey)
  redis.call('PERSIST', pkey)
  return {'ok'}
end

local out = {}
for i = 0, #KEYS / 4 - 1 do
  local k = i * 4
  out[i + 1] = reserve(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], 3 + i * 8)
end
return out
