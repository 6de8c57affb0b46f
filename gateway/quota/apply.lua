-- After a Postgres commit that changed usage or ended reservations: mirror it, for
-- one or more projects and tenants of theirs. Also the audit's repair of reservations
-- that no pending upload backs (usage unchanged, the ids released).
-- Every key the script touches is in KEYS (see reserve.lua); on Redis Cluster a call
-- holds one project's keys.
-- KEYS, per project: project hash, project marker, project journal, project
--       deadlines, project generation, then 4 per tenant: tenant hash, tenant
--       marker, tenant journal, tenant deadlines.
-- ARGV: idle ttl (s), then per project: project used, project version, number of
--       tenants; then per tenant: tenant used, tenant version, n, and the n upload
--       ids whose reservations end (in the tenant's hash and deadlines, and the
--       project's). Version -1 = usage unchanged.
-- A missing hash is left missing (it is rebuilt from Postgres on demand), but its
-- rebuild marker is dropped so that a rebuild based on an older snapshot retries, and
-- the change is written to the hash's journal (kept a few minutes): the newest usage
-- and the reservations that ended, which an install reconciles its snapshot with
-- (reserve.lua). A hash built under another generation than the project's (see
-- reserve.lua) is not trusted: deleted, with its deadlines, it is missing.
local JOURNAL_TTL = 300

local function valid(h, dl, gen)
  if redis.call('EXISTS', h) == 0 then return false end
  if gen and redis.call('HGET', h, 'g') == gen then return true end
  redis.call('DEL', h, dl)
  return false
end

-- the hash is valid: its usage is set at a newer version; else its marker is dropped
-- and the usage journaled
local function set_usage(h, dl, marker, journal, gen, used, ver)
  local newer = tonumber(ver) >= 0
  if not valid(h, dl, gen) then
    redis.call('DEL', marker)
    if newer and tonumber(ver) > tonumber(redis.call('HGET', journal, 'ver') or '-1') then
      redis.call('HSET', journal, 'used', used, 'ver', ver)
      redis.call('EXPIRE', journal, JOURNAL_TTL)
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
local function journal_release(journal, first, last)
  if last < first then return end
  for i = first, last do redis.call('HSET', journal, 'x:' .. ARGV[i], 1) end
  redis.call('EXPIRE', journal, JOURNAL_TTL)
end

local function idle_ttl(h)
  if tonumber(redis.call('HGET', h, 'res') or '0') <= 0 then
    redis.call('EXPIRE', h, ARGV[1])
  end
end

local k, a = 1, 2
while k <= #KEYS do
  local p, pjournal, pdl = KEYS[k], KEYS[k + 2], KEYS[k + 3]
  local gen = redis.call('GET', KEYS[k + 4])
  local p_exists = set_usage(p, pdl, KEYS[k + 1], pjournal, gen, ARGV[a], ARGV[a + 1])
  local tenants = tonumber(ARGV[a + 2])
  local tprefix_len = #p + 2  -- tenant key = project key less 'p' + 't:' + tenant id
  k, a = k + 5, a + 3
  for _ = 1, tenants do
    local t, tjournal, tdl = KEYS[k], KEYS[k + 2], KEYS[k + 3]
    local n = tonumber(ARGV[a + 2])
    local first, last = a + 3, a + 2 + n
    if set_usage(t, tdl, KEYS[k + 1], tjournal, gen, ARGV[a], ARGV[a + 1]) then
      release(t, first, last)
      idle_ttl(t)
    else
      journal_release(tjournal, first, last)
    end
    if p_exists then release(p, first, last) else journal_release(pjournal, first, last) end
    if n > 0 then
      local tenant = string.sub(t, tprefix_len)
      for i = first, last do
        redis.call('ZREM', tdl, ARGV[i])
        redis.call('ZREM', pdl, ARGV[i] .. '|' .. tenant)
      end
    end
    k, a = k + 4, last + 1
  end
  if p_exists then idle_ttl(p) end
end
return 1
