-- Applies one batch of leaderboard updates atomically, guarded by a replay watermark.
-- KEYS[1]: the watermark key of the stream; KEYS[2..n]: the keys the ops act on.
-- ARGV[1], ARGV[2]: the batch's first and last stream positions (strings that sort in
-- stream order); then three ARGV per data key: op, a, b.
--   i: INCRBY key a         s: SET key a EX b
--   z: ZINCRBY key b a      e: EXPIRE key a
-- Returns 1 when applied, 0 when the whole batch is at or below the watermark (a replay),
-- or the watermark itself when the batch straddles it (the caller drops the events at or
-- below it and calls again).
local wm = redis.call('GET', KEYS[1])
if wm then
  if ARGV[2] <= wm then return 0 end
  if ARGV[1] <= wm then return wm end
end
for i = 2, #KEYS do
  local base = 3 + (i - 2) * 3
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
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
