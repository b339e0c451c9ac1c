-- check_one: shared::check_and_mark for one mark, atomically (the whole script is).
-- Returns {0, request_count} accepted, {1, ''} replayed, {2, state} ended,
-- {3, ''} unknown, {4, why} the stored session is corrupt (nothing changed).
local function check_one(key, seq, nxt, slot, now, close, member, live_key, ended_key, retain)
  local f = redis.call('HMGET', key, 'state', 'expires_at_ms', 'last_used_at_ms',
    'idle_timeout_ms', 'request_count', 'win_top', 'win_bits')
  local state = f[1]
  if not state then return { 3, '' } end
  local top = f[6] or '0'
  local bits = f[7] or ''
  if #bits ~= 0 and #bits ~= 128 then return { 4, 'corrupt replay window' } end

  -- 1. Seen, or older than the window: checked first, so an ended session's refusal is
  --    only ever tagged for a number that never ran.
  if nxt == '' then return { 1, '' } end
  local ahead = diff(seq, top)
  if ahead < 0 and (-ahead > 1024 or win_has(bits, slot)) then return { 1, '' } end

  -- 2. Ended.
  if not LIVE[state] then return { 2, state } end

  -- 3. Lifetime or idle time ran out: ends now.
  if diff(f[2], now) <= 0 or sum_le(f[3], f[4], now) then
    end_session(key, member, 'expired', now, '', live_key, ended_key, retain)
    return { 2, 'expired' }
  end

  -- 4. Mark, use, count, and close if asked.
  if #bits == 0 then bits = ZEROS end
  if ahead >= 0 then
    if ahead >= 1023 then
      bits = ZEROS
    else
      -- Clear the slots of the numbers that slide into the window unseen.
      local _, tl = split(top)
      local first = tl % 1024 -- 10^10 is a multiple of 1024
      for k = 0, ahead do bits = win_set(bits, (first + k) % 1024, false) end
    end
    top = nxt
  end
  bits = win_set(bits, slot, true)
  local used = f[3]
  if diff(now, used) > 0 then used = now end
  local count = incr(f[5])
  redis.call('HSET', key, 'win_top', top, 'win_bits', bits,
    'last_used_at_ms', used, 'request_count', count)
  if close == '1' then
    end_session(key, member, 'closed', now, '', live_key, ended_key, retain)
  end
  return { 0, count }
end
