-- Rebuilds one quota hash from a Postgres snapshot, but only if nothing happened
-- since the snapshot began: the marker (set before the snapshot was read) must still
-- hold our nonce. Anything that changes the state while the hash is missing deletes
-- the marker (apply.lua), as does a flush; then the caller takes a new snapshot.
-- KEYS: hash, marker. ARGV: nonce, used, usage version, then upload id, size pairs.
-- Returns 1 when the hash is there (built by us or someone else), 0 to retry.
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'used', ARGV[2], 'ver', ARGV[3], 'res', '0')
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'r:' .. ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[1], 'res', ARGV[i + 1])
end
redis.call('DEL', KEYS[2])
return 1
