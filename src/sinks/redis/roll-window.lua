-- Moves the 10-minute leaderboards (content events, content seconds, device events) to the
-- window ending at the caller's current minute, atomically. Invariant kept with apply-batch.lua:
-- each 10-minute ZSET holds the sum of the minute buckets of the stored window [from, to]
-- (top:meta:10m), because a batch adds to a 10-minute ZSET exactly when its minute is inside the
-- stored window, and this script moves the window and the ZSETs together.
--  * The stored window is the guard: a window already ending at or after the caller's minute is
--    left alone, so however many processes roll, each minute moves the window once, and never
--    backwards (a process with a slower clock does nothing).
--  * A move of at most K minutes is incremental: ZUNIONSTORE dst n dst left... entered...
--    WEIGHTS 1 -1... 1..., then members at zero or below are removed.
--  * A longer move (the pipeline stood still), no window yet, or one that is not W minutes
--    wide is rebuilt from the W buckets. K stays well below the buckets' 15-minute TTL: a bucket
--    that expired before leaving the window could not be subtracted, and a bucket's TTL starts
--    again at every write and (EXPIRE GT below) when it enters the window, so it outlives a
--    window that leaves it on time; a late roll rebuilds instead.
-- Engagement seconds are sums of millisecond values in binary floating point: every score this
-- script changes on the seconds board is rounded to the millisecond, and a member below half a
-- millisecond is gone, so the board stays exact however long it is updated incrementally.
-- KEYS[1]: top:meta:10m; KEYS[2..4]: the content, seconds and device 10-minute ZSETs;
-- then per minute (oldest first) its content, seconds and device bucket.
-- ARGV[1]: 'r' (roll if behind) or 'f' (rebuild, unless the stored window is ahead);
-- ARGV[2]: refreshed_at (ISO); ARGV[3]: W, the window's minutes; ARGV[4]: K;
-- ARGV[5..]: the W + K minutes (YYYYMMDDHHMM) ending at the caller's minute, oldest first.
-- Returns {status, from, to} of the stored window: status 'same' (nothing done), 'rolled' or
-- 'rebuilt'. Errors: 'EP_ERR_REDIS_KEY_TYPE <key> ...' before anything is written.
local W = tonumber(ARGV[3])
local K = tonumber(ARGV[4])
local N = #ARGV - 4
local minutes = {}
for i = 1, N do minutes[i] = ARGV[4 + i] end
local target = minutes[N]
local BUCKET_TTL = 900

local function bad(key, why)
  return redis.error_reply('EP_ERR_REDIS_KEY_TYPE ' .. key .. ' ' .. why .. '; the window was not moved')
end
local function typeOf(key)
  return redis.call('TYPE', key)['ok']
end

local t = typeOf(KEYS[1])
if t ~= 'none' and t ~= 'hash' then return bad(KEYS[1], 'holds a ' .. t .. ', expected a hash') end
local stored = redis.call('HMGET', KEYS[1], 'from', 'to')
local from, to = stored[1], stored[2]
if to and (to > target or (to == target and ARGV[1] == 'r')) then return { 'same', from, to } end
for i = 2, #KEYS do
  t = typeOf(KEYS[i])
  if t ~= 'none' and t ~= 'zset' then return bad(KEYS[i], 'holds a ' .. t .. ', expected a sorted set') end
end

local function bucket(i, board) -- board 1 content, 2 seconds, 3 device
  return KEYS[4 + 3 * (i - 1) + board]
end

-- The seconds board: scores rounded to the millisecond, members below half of one removed.
local function roundSeconds(members)
  local dst = KEYS[3]
  for _, m in ipairs(members) do
    local s = redis.call('ZSCORE', dst, m)
    if s then
      local v = tonumber(s)
      local k = math.floor(v * 1000 + 0.5)
      if k <= 0 then
        redis.call('ZREM', dst, m)
      elseif k / 1000 ~= v then
        redis.call('ZADD', dst, string.format('%.3f', k / 1000), m)
      end
    end
  end
end

-- Where the stored window ends among the caller's minutes (j), when it is W wide.
local j = nil
if to and ARGV[1] == 'r' then
  for i = N - K, N - 1 do
    if minutes[i] == to and i - W + 1 >= 1 and minutes[i - W + 1] == from then j = i end
  end
end

local status
if j then
  -- Left: minutes j-W+1 .. N-W (before the new window); entered: j+1 .. N.
  for board = 1, 3 do
    local dst = KEYS[1 + board]
    local args = { dst }
    local weights = { 1 }
    local moved = {}
    for i = j - W + 1, N - W do
      args[#args + 1] = bucket(i, board); weights[#weights + 1] = -1
    end
    for i = j + 1, N do
      args[#args + 1] = bucket(i, board); weights[#weights + 1] = 1
      redis.call('EXPIRE', bucket(i, board), BUCKET_TTL, 'GT')
    end
    local call = { 'ZUNIONSTORE', dst, #args }
    for _, v in ipairs(args) do call[#call + 1] = v end
    call[#call + 1] = 'WEIGHTS'
    for _, v in ipairs(weights) do call[#call + 1] = v end
    redis.call(unpack(call))
    if board == 2 then
      redis.call('ZREMRANGEBYSCORE', dst, '-inf', '(0.0005')
      for a = 2, #args do
        for _, m in ipairs(redis.call('ZRANGE', args[a], 0, -1)) do moved[#moved + 1] = m end
      end
      roundSeconds(moved)
    else
      redis.call('ZREMRANGEBYSCORE', dst, '-inf', 0)
    end
  end
  status = 'rolled'
else
  for board = 1, 3 do
    local args = {}
    for i = N - W + 1, N do
      args[#args + 1] = bucket(i, board)
      redis.call('EXPIRE', bucket(i, board), BUCKET_TTL, 'GT')
    end
    redis.call('ZUNIONSTORE', KEYS[1 + board], #args, unpack(args))
  end
  roundSeconds(redis.call('ZRANGE', KEYS[3], 0, -1))
  status = 'rebuilt'
end
from = minutes[N - W + 1]
redis.call('HSET', KEYS[1], 'from', from, 'to', target, 'refreshed_at', ARGV[2])
return { status, from, target }
