-- After a Postgres commit that changed usage or ended reservations: mirror it.
-- KEYS: tenant hash, tenant marker, project hash, project marker.
-- ARGV: tenant used, tenant version, project used, project version (version -1 =
--       unchanged; tenant version -2 = leave the tenant hash alone), idle ttl (s),
--       then the upload ids whose reservations end.
-- A missing hash is left missing (it is rebuilt from Postgres on demand), but its
-- rebuild marker is dropped so that a rebuild based on an older snapshot retries.
local function apply(h, marker, used, ver)
  if redis.call('EXISTS', h) == 0 then
    redis.call('DEL', marker)
    return
  end
  if tonumber(ver) >= 0 and tonumber(ver) > tonumber(redis.call('HGET', h, 'ver') or '-1') then
    redis.call('HSET', h, 'used', used, 'ver', ver)
  end
  for i = 6, #ARGV do
    local f = 'r:' .. ARGV[i]
    local sz = redis.call('HGET', h, f)
    if sz then
      redis.call('HDEL', h, f)
      redis.call('HINCRBY', h, 'res', 0 - tonumber(sz))
    end
  end
  if tonumber(redis.call('HGET', h, 'res') or '0') <= 0 then
    redis.call('EXPIRE', h, ARGV[5])
  end
end
if ARGV[2] ~= '-2' then apply(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) end
apply(KEYS[3], KEYS[4], ARGV[3], ARGV[4])
return 1
