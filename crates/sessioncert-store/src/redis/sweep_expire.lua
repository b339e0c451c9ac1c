-- sweep, part 1: expires the listed live sessions that are due (re-checked here).
-- KEYS: all index, live index, ended index, then the session hashes.
-- ARGV: now, matching_ttl, retain_ms, then the index members.
local all_key, live_key, ended_key = KEYS[1], KEYS[2], KEYS[3]
local now, ttl, retain = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for i = 1, #KEYS - 3 do
  local key, member = KEYS[3 + i], ARGV[3 + i]
  local f = redis.call('HMGET', key, 'state', 'expires_at_ms', 'last_used_at_ms',
    'idle_timeout_ms', 'created_at_ms')
  if not f[1] then
    -- The hash outlived its TTL: drop what still points at it.
    redis.call('ZREM', live_key, member)
    redis.call('ZREM', all_key, member)
  elseif LIVE[f[1]] and (diff(f[2], now) <= 0 or sum_le(f[3], f[4], now)
      or (f[1] == 'matching' and sum_le(f[5], ttl, now))) then
    end_session(key, member, 'expired', now, '', live_key, ended_key, retain)
    n = n + 1
  end
end
return n
