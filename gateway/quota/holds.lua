-- Which uploads hold a reservation in their tenant's hash, for the audit and for
-- idempotent replays. KEYS, 2 per upload: its tenant's hash, its project's generation
-- (see reserve.lua). ARGV: the upload ids.
-- Returns per upload: 1 held, 0 not held (the hash exists), -1 the hash is missing, or
-- was built under another generation (it will be rebuilt from Postgres): a hash in a
-- Redis process other than the one that made the generation may miss the last writes.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
local suffix = '/' .. run_id
local out = {}
for i = 1, #ARGV do
  local h, gen = KEYS[2 * i - 1], redis.call('GET', KEYS[2 * i])
  if not gen or string.sub(gen, -#suffix) ~= suffix or redis.call('HGET', h, 'g') ~= gen then
    out[i] = -1
  elseif redis.call('HEXISTS', h, 'r:' .. ARGV[i]) == 1 then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
