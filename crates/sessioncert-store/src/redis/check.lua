-- check_request for a batch of marks (crate::batch), each decided by check_one in
-- order: marks of one session apply in their order in the batch.
-- KEYS: live index, ended index, then the session hash of each mark.
-- ARGV: retain_ms, then per mark: seq, seq + 1 ('' when seq is u64::MAX: never
--       acceptable), seq % 1024, now, close ('1'/'0'), index member.
-- Returns {code, detail} for each mark, in order (codes as check_one's).
local out = {}
for i = 1, #KEYS - 2 do
  local a = 2 + (i - 1) * 6
  out[i] = check_one(KEYS[2 + i], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5], KEYS[1], KEYS[2], ARGV[1])
end
return out
