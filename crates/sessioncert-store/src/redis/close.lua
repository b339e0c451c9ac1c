-- close: an operator's close of a live session.
-- KEYS: session hash, live index, ended index. ARGV: now, index member, retain_ms.
local state = redis.call('HGET', KEYS[1], 'state')
if state and LIVE[state] then
  end_session(KEYS[1], ARGV[2], 'closed', ARGV[1], '', KEYS[2], KEYS[3], ARGV[3])
  return 1
end
return 0
