-- Shared by every script (EVAL has no libraries, so it is prepended to each).
--
-- Every u64 (times, counts, sequence numbers) is stored and passed as canonical decimal
-- text. Lua 5.1 numbers are doubles, exact only below 2^53, so arithmetic splits a value
-- into a high part and its last 10 digits; both are exact, and so is every result below.
local E10 = 10000000000
local MAX_H, MAX_L = 1844674407, 3709551615 -- u64::MAX split the same way

local function split(s)
  local n = #s
  if n <= 10 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 10)), tonumber(string.sub(s, n - 9))
end

local function join(h, l)
  if h == 0 then return string.format('%d', l) end
  return string.format('%d%010d', h, l)
end

-- a - b as a number: exact while small, and always of the right sign.
local function diff(a, b)
  local ah, al = split(a)
  local bh, bl = split(b)
  return (ah - bh) * E10 + (al - bl)
end

-- min(a + b, u64::MAX) <= c, the reference rule's saturating idle/ttl test.
local function sum_le(a, b, c)
  local ah, al = split(a)
  local bh, bl = split(b)
  local ch, cl = split(c)
  local h, l = ah + bh, al + bl
  if l >= E10 then h, l = h + 1, l - E10 end
  if h > MAX_H or (h == MAX_H and l > MAX_L) then h, l = MAX_H, MAX_L end
  return (h - ch) * E10 + (l - cl) <= 0
end

local function incr(s)
  local h, l = split(s)
  l = l + 1
  if l >= E10 then h, l = h + 1, l - E10 end
  return join(h, l)
end

local LIVE = { matching = true, established = true }

-- Ends a live session: new state and end time, secrets replaced by the remains (usually
-- nothing), moved from the live index to the ended one, kept `retain_ms` more.
local function end_session(key, member, state, at, remains, live_key, ended_key, retain_ms)
  redis.call('HSET', key, 'state', state, 'ended_at_ms', at, 'sealed_secrets', remains)
  redis.call('ZREM', live_key, member)
  redis.call('ZADD', ended_key, at, member)
  if retain_ms ~= '' then redis.call('PEXPIRE', key, retain_ms) end
end

-- The replay window: `win_top` (highest accepted + 1) and `win_bits`, a 128-byte ring of
-- 1024 bits, bit `seq % 1024` set when `seq` was accepted. Missing means all zero.
local ZEROS = string.rep('\0', 128)

local function win_has(bits, slot)
  if #bits ~= 128 then return false end
  local b = string.byte(bits, math.floor(slot / 8) + 1)
  return bit.band(b, bit.lshift(1, slot % 8)) ~= 0
end

-- `bits` with one slot set or cleared. Copies only when the byte changes: a request
-- usually changes one bit, and clearing slid-over slots mostly finds them clear.
local function win_set(bits, slot, on)
  local i = math.floor(slot / 8) + 1
  local b = string.byte(bits, i)
  local m = bit.lshift(1, slot % 8)
  local nb
  if on then nb = bit.bor(b, m) else nb = bit.band(b, bit.bnot(m)) end
  if nb == b then return bits end
  return string.sub(bits, 1, i - 1) .. string.char(nb) .. string.sub(bits, i + 1)
end
