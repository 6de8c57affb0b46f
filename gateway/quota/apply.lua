-- After a Postgres commit that changed usage or ended reservations: mirror it, for
-- one or more projects and tenants of theirs. Also the audit's repair of reservations
-- that no pending upload backs (usage unchanged, the ids released).
-- KEYS, per project: project hash, project marker, project deadlines, then 2 per
--       tenant: tenant hash, tenant marker.
-- ARGV: idle ttl (s), then per project: project used, project version, number of
--       tenants; then per tenant: tenant used, tenant version, n, and the n upload
--       ids whose reservations end (in the tenant's hash, the project's and the
--       deadlines). Version -1 = usage unchanged.
-- A missing hash is left missing (it is rebuilt from Postgres on demand), but its
-- rebuild marker is dropped so that a rebuild based on an older snapshot retries, and
-- the change is written to the hash's journal (<hash>:j, kept a few minutes): the
-- newest usage and the reservations that ended, which an install reconciles its
-- snapshot with (reserve.lua).
local JOURNAL_TTL = 300

-- the hash exists: its usage is set at a newer version; else its marker is dropped
-- and the usage journaled
local function set_usage(h, marker, used, ver)
  local newer = tonumber(ver) >= 0
  if redis.call('EXISTS', h) == 0 then
    redis.call('DEL', marker)
    local j = h .. ':j'
    if newer and tonumber(ver) > tonumber(redis.call('HGET', j, 'ver') or '-1') then
      redis.call('HSET', j, 'used', used, 'ver', ver)
      redis.call('EXPIRE', j, JOURNAL_TTL)
    end
    return false
  end
  if newer and tonumber(ver) > tonumber(redis.call('HGET', h, 'ver') or '-1') then
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

-- the reservations that ended while the hash was missing
local function journal_release(h, first, last)
  if last < first then return end
  local j = h .. ':j'
  for i = first, last do redis.call('HSET', j, 'x:' .. ARGV[i], 1) end
  redis.call('EXPIRE', j, JOURNAL_TTL)
end

local function idle_ttl(h)
  if tonumber(redis.call('HGET', h, 'res') or '0') <= 0 then
    redis.call('EXPIRE', h, ARGV[1])
  end
end

local k, a = 1, 2
while k <= #KEYS do
  local p, dl = KEYS[k], KEYS[k + 2]
  local p_exists = set_usage(p, KEYS[k + 1], ARGV[a], ARGV[a + 1])
  local tenants = tonumber(ARGV[a + 2])
  local tprefix_len = #p + 2  -- tenant key = project key less 'p' + 't:' + tenant id
  k, a = k + 3, a + 3
  for _ = 1, tenants do
    local n = tonumber(ARGV[a + 2])
    local first, last = a + 3, a + 2 + n
    if set_usage(KEYS[k], KEYS[k + 1], ARGV[a], ARGV[a + 1]) then
      release(KEYS[k], first, last)
      idle_ttl(KEYS[k])
    else
      journal_release(KEYS[k], first, last)
    end
    if p_exists then release(p, first, last) else journal_release(p, first, last) end
    if n > 0 then
      local tenant = string.sub(KEYS[k], tprefix_len)
      for i = first, last do redis.call('ZREM', dl, ARGV[i] .. '|' .. tenant) end
    end
    k, a = k + 2, last + 1
  end
  if p_exists then idle_ttl(p) end
end
return 1
