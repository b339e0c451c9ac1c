-- save / create: a batch of writes, in order, atomically.
-- KEYS: all index, live index, ended index, then one session hash per write.
-- ARGV[1]: retain_ms; then per write its kind, its index member and its fields:
--   I state version suite has_addr addr created last_used expires idle count secrets ttl_ms
--   P state last_used count secrets
--   E state at remains
-- Returns one 1/0 per write: whether it changed anything.
local all_key, live_key, ended_key = KEYS[1], KEYS[2], KEYS[3]
local retain = ARGV[1]
local out = {}
local a = 2
for i = 1, #KEYS - 3 do
  local key = KEYS[3 + i]
  local kind, member = ARGV[a], ARGV[a + 1]
  if kind == 'I' then
    if redis.call('EXISTS', key) == 1 then
      out[i] = 0 -- the first record wins; an ended session is never brought back
    else
      redis.call('HSET', key, 'state', ARGV[a + 2], 'version', ARGV[a + 3],
        'suite', ARGV[a + 4], 'created_at_ms', ARGV[a + 7],
        'last_used_at_ms', ARGV[a + 8], 'expires_at_ms', ARGV[a + 9],
        'idle_timeout_ms', ARGV[a + 10], 'request_count', ARGV[a + 11],
        'sealed_secrets', ARGV[a + 12], 'win_top', '0')
      if ARGV[a + 5] == '1' then redis.call('HSET', key, 'client_addr', ARGV[a + 6]) end
      redis.call('ZADD', all_key, ARGV[a + 7], member)
      redis.call('ZADD', live_key, ARGV[a + 7], member)
      if ARGV[a + 13] ~= '' then redis.call('PEXPIRE', key, ARGV[a + 13]) end
      out[i] = 1
    end
    a = a + 14
  elseif kind == 'P' then
    local state = redis.call('HGET', key, 'state')
    if state and LIVE[state] then
      -- Matching -> Established only; never touches the window.
      if ARGV[a + 2] == 'established' then state = 'established' end
      redis.call('HSET', key, 'state', state, 'last_used_at_ms', ARGV[a + 3],
        'request_count', ARGV[a + 4], 'sealed_secrets', ARGV[a + 5])
      out[i] = 1
    else
      out[i] = 0
    end
    a = a + 6
  elseif kind == 'E' then
    local f = redis.call('HMGET', key, 'state', 'sealed_secrets')
    if f[1] and LIVE[f[1]] then
      end_session(key, member, ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], live_key, ended_key, retain)
      out[i] = 1
    elseif f[1] and (not f[2] or f[2] == '') then
      -- Ended by a request check (secrets wiped, no remains yet): the remains follow,
      -- state and end time stay.
      redis.call('HSET', key, 'sealed_secrets', ARGV[a + 4])
      out[i] = 1
    else
      out[i] = 0
    end
    a = a + 5
  else
    return redis.error_reply('unknown write kind')
  end
end
return out
