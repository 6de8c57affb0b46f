-- Which uploads hold a reservation in their tenant's hash, for the audit and for
-- idempotent replays. KEYS: one tenant hash per upload. ARGV: the upload ids.
-- Returns per upload: 1 held, 0 not held (the hash exists), -1 the hash is missing.
local out = {}
for i = 1, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 'r:' .. ARGV[i]) == 1 then
    out[i] = 1
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    out[i] = 0
  else
    out[i] = -1
  end
end
return out
