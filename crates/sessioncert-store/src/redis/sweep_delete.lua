-- sweep, part 2: deletes the listed ended sessions whose end is before the cutoff
-- (re-checked here, exactly: the index scores are doubles).
-- KEYS: all index, live index, ended index, then the session hashes.
-- ARGV: cutoff, then the index members.
local all_key, live_key, ended_key = KEYS[1], KEYS[2], KEYS[3]
local cutoff = ARGV[1]
local n = 0
for i = 1, #KEYS - 3 do
  local key, member = KEYS[3 + i], ARGV[1 + i]
  local f = redis.call('HMGET', key, 'state', 'ended_at_ms')
  if not f[1] then
    redis.call('ZREM', ended_key, member)
    redis.call('ZREM', live_key, member)
    redis.call('ZREM', all_key, member)
  elseif LIVE[f[1]] or not f[2] then
    -- Stale index entry (inserted again after its TTL ran out): not ended.
    redis.call('ZREM', ended_key, member)
  elseif diff(f[2], cutoff) < 0 then
    redis.call('DEL', key)
    redis.call('ZREM', ended_key, member)
    redis.call('ZREM', live_key, member)
    redis.call('ZREM', all_key, member)
    n = n + 1
  end
end
return n
