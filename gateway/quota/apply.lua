-- After a Postgres commit that changed usage or ended reservations: mirror it, for
-- one or more projects and tenants of theirs.
-- KEYS, per project: project hash, project marker, then 2 per tenant: tenant hash,
--       tenant marker.
-- ARGV: idle ttl (s), then per project: project used, project version, number of
--       tenants; then per tenant: tenant used, tenant version, n, and the n upload
--       ids whose reservations end (in the tenant's hash and the project's).
--       Version -1 = usage unchanged; tenant version -2 = leave the tenant hash alone.
-- A missing hash is left missing (it is rebuilt from Postgres on demand), but its
-- rebuild marker is dropped so that a rebuild based on an older snapshot retries.

-- the hash exists: its usage is set at a newer version; else its marker is dropped
local function set_usage(h, marker, used, ver)
  if redis.call('EXISTS', h) == 0 then
    redis.call('DEL', marker)
    return false
  end
  if tonumber(ver) >= 0 and tonumber(ver) > tonumber(redis.call('HGET', h, 'ver') or '-1') then
    redis.call('HSET', h, 'used', used, 'ver', ver)
  end
  return true
end

local function release(h, first, last)
  for i = first, last do
    local f = 'r:' .. ARGV[i]
    local sz = redis.call('HGET', h, f)
    if sz then
      redis.call('HDEL', h, f)
      redis.call('HINCRBY', h, 'res', 0 - tonumber(sz))
    end
  end
end

local function idle_ttl(h)
  if tonumber(redis.call('HGET', h, 'res') or '0') <= 0 then
    redis.call('EXPIRE', h, ARGV[1])
  end
end

local k, a = 1, 2
while k <= #KEYS do
  local p = KEYS[k]
  local p_exists = set_usage(p, KEYS[k + 1], ARGV[a], ARGV[a + 1])
  local tenants = tonumber(ARGV[a + 2])
  k, a = k + 2, a + 3
  for _ = 1, tenants do
    local n = tonumber(ARGV[a + 2])
    local first, last = a + 3, a + 2 + n
    if ARGV[a + 1] ~= '-2' and set_usage(KEYS[k], KEYS[k + 1], ARGV[a], ARGV[a + 1]) then
      release(KEYS[k], first, last)
      idle_ttl(KEYS[k])
    end
    if p_exists then release(p, first, last) end
    k, a = k + 2, last + 1
  end
  if p_exists then idle_ttl(p) end
end
return 1
