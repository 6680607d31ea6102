-- Applies one batch of leaderboard updates atomically. Two guards:
--  * the stream's replay watermark (mode 's' only): a batch at or below it is a no-op;
--  * event-level "seen" bitmaps (both modes): one bit per event_id, set when the event's
--    minute-bucket increments are applied, so the stream and a concurrent backfill never
--    count the same event twice in the windowed leaderboards (whichever comes first counts).
-- KEYS[1]: the stream's watermark key; KEYS[2 .. 1+S]: seen bitmaps; the rest: op keys.
-- ARGV[1]: mode, 's' (stream) or 'b' (backfill: no watermark read or written)
-- ARGV[2], ARGV[3]: the batch's first and last stream positions (strings sorting in order)
-- ARGV[4]: S, the number of seen bitmaps; ARGV[5]: their TTL in seconds
-- then per bitmap: a count n and n bit offsets; then three ARGV per op key: op, a, b
--   i: INCRBY key a         s: SET key a EX b
--   z: ZINCRBY key b a      e: EXPIRE key a
-- Returns 1 when applied; 2 when applied in stream mode where no watermark existed (a fresh
-- Redis, or one that lost its data: the caller tells the two apart); 0 when the whole batch is
-- at or below the watermark (a replay);
-- the watermark itself when the batch straddles it (the caller trims and calls again);
-- or {'dup', k1, j1, k2, j2, ...} naming offsets (bitmap k, j-th offset) already set, in
-- which case nothing was changed: the caller drops those events' bucket ops and calls again.
local stream = ARGV[1] == 's'
local wm = false
if stream then
  wm = redis.call('GET', KEYS[1])
  if wm then
    if ARGV[3] <= wm then return 0 end
    if ARGV[2] <= wm then return wm end
  end
end

local nseen = tonumber(ARGV[4])
local a = 6
local dups = {}
local fresh = {} -- per bitmap, the offsets this call set (for the rollback on a duplicate)
-- BITFIELD takes many offsets per call; chunks bound the arguments unpack() puts on the stack.
local CHUNK = 500
for k = 1, nseen do
  local n = tonumber(ARGV[a])
  local first = a + 1
  a = first + n
  local mine = {}
  fresh[k] = mine
  for from = 0, n - 1, CHUNK do
    local to = math.min(n - 1, from + CHUNK - 1)
    local args = {}
    for j = from, to do
      local m = #args
      args[m + 1] = 'SET'; args[m + 2] = 'u1'; args[m + 3] = ARGV[first + j]; args[m + 4] = 1
    end
    local old = redis.call('BITFIELD', KEYS[1 + k], unpack(args))
    for j = from, to do
      if old[j - from + 1] == 1 then
        dups[#dups + 1] = k; dups[#dups + 1] = j
      else
        mine[#mine + 1] = ARGV[first + j]
      end
    end
  end
end
if #dups > 0 then
  -- Undo the bits this call set, so the retry (without the duplicates) is all or nothing.
  for k = 1, nseen do
    local mine = fresh[k]
    for from = 1, #mine, CHUNK do
      local args = {}
      for j = from, math.min(#mine, from + CHUNK - 1) do
        local m = #args
        args[m + 1] = 'SET'; args[m + 2] = 'u1'; args[m + 3] = mine[j]; args[m + 4] = 0
      end
      redis.call('BITFIELD', KEYS[1 + k], unpack(args))
    end
  end
  table.insert(dups, 1, 'dup')
  return dups
end
for k = 1, nseen do
  redis.call('EXPIRE', KEYS[1 + k], ARGV[5])
end

local base = a
for i = 2 + nseen, #KEYS do
  local op = ARGV[base]
  if op == 'i' then
    redis.call('INCRBY', KEYS[i], ARGV[base + 1])
  elseif op == 's' then
    redis.call('SET', KEYS[i], ARGV[base + 1], 'EX', ARGV[base + 2])
  elseif op == 'z' then
    redis.call('ZINCRBY', KEYS[i], ARGV[base + 2], ARGV[base + 1])
  elseif op == 'e' then
    redis.call('EXPIRE', KEYS[i], ARGV[base + 1])
  end
  base = base + 3
end
if stream then
  redis.call('SET', KEYS[1], ARGV[3])
  if not wm then return 2 end
end
return 1
