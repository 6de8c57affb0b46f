-- After a Postgres commit that changed usage or ended reservations: mirror it, for
-- one or more tenants of one project.
-- KEYS, 4 per tenant: tenant hash, tenant marker, project hash, project marker.
-- ARGV: idle ttl (s), then per tenant: tenant used, tenant version, project used,
--       project version (version -1 = unchanged; tenant version -2 = leave the
--       tenant hash alone), n, then the n upload ids whose reservations end.
-- A missing hash is left missing (it is rebuilt from Postgres on demand), but its
-- rebuild marker is dropped so that a rebuild based on an older snapshot retries.
local function apply(h, marker, used, ver, first, last)
  if redis.call('EXISTS', h) == 0 then
    redis.call('DEL', marker)
    return
  end
  if tonumber(ver) >= 0 and tonumber(ver) > tonumber(redis.call('HGET', h, 'ver') or '-1') then
    redis.call('HSET', h, 'used', used, 'ver', ver)
  end
  for i = first, last do
    local f = 'r:' .. ARGV[i]
    local sz = redis.call('HGET', h, f)
    if sz then
      redis.call('HDEL', h, f)
      redis.call('HINCRBY', h, 'res', 0 - tonumber(sz))
    end
  end
  if tonumber(redis.call('HGET', h, 'res') or '0') <= 0 then
    redis.call('EXPIRE', h, ARGV[1])
  end
end

local a = 2
for k = 1, #KEYS, 4 do
  local n = tonumber(ARGV[a + 4])
  local first, last = a + 5, a + 4 + n
  if ARGV[a + 1] ~= '-2' then apply(KEYS[k], KEYS[k + 1], ARGV[a], ARGV[a + 1], first, last) end
  apply(KEYS[k + 2], KEYS[k + 3], ARGV[a + 2], ARGV[a + 3], first, last)
  a = last + 1
end
return 1
