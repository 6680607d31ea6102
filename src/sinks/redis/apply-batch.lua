-- Applies one batch of leaderboard updates, all or nothing. Guards:
--  * the stream's replay watermark (mode 's' only): a batch at or below it is a no-op;
--  * per-event "seen" bitmaps (both modes, no TTL): one bit per event_id, set in the same call
--    that applies the event's effects (content:count, content:last, minute buckets, 10-minute
--    ZSETs), so the stream, a replay and any number of backfills count each event exactly once.
-- A bucket increment also goes to its 10-minute ZSET when the bucket's minute is inside the
-- window stored in top:meta:10m (from, to), so a batch is on the leaderboards the moment it is
-- applied; roll-window.lua moves that window (see there for the invariant). Scores written to
-- the seconds board are rounded to the millisecond (sums of millisecond values in floating point).
-- Redis scripts are atomic but not transactional: a command that fails half way keeps the
-- writes before it. So every key is checked (type, and an integer where INCRBY will run)
-- before the first write, and an unusable key fails the whole call with nothing written.
-- KEYS[1]: the stream's watermark key; KEYS[2]: top:meta:10m; KEYS[3..5]: the content, seconds
-- and device 10-minute ZSETs; KEYS[6 .. 5+S]: seen bitmaps; then C pairs (content:count,
-- content:last), one per content of the batch; then one key per minute bucket.
-- ARGV[1]: mode, 's' (stream) or 'b' (backfill: no watermark read or written)
-- ARGV[2], ARGV[3]: the batch's first and last stream positions (strings sorting in order)
-- ARGV[4]: S, the number of seen bitmaps; ARGV[5]: content:last TTL in seconds
-- ARGV[6]: the identity of the positions' source ('postgres:<system identifier>'), or '' for a
--   stream without one (Kafka partitions fed by Debezium): positions of different sources do
--   not compare, so for such a stream the watermark skips nothing (the seen bits do)
-- ARGV[7]: C, the number of contents
-- then per bitmap: a count n and n bit offsets;
-- then per content: its event count (INCRBY content:count), its latest event's JSON and that
--   event's order key (SET content:last EX ttl, unless it holds a later event);
-- then per bucket: its board (c, s or d) and minute, 'c 202612011000'; its TTL (EXPIRE, after
--   the increments); m; and m pairs: member, increment (ZINCRBY).
-- (leaderboardOps() in leaderboard-ops.ts writes this layout.) Order keys ("<event_ts sort
-- key> <event_id>") compare as (event_ts, event_id); see lastOrder() there, which this mirrors.
-- The watermark is '<position>|<source>' when the stream has a source identity, else the bare
-- position. A watermark of another source (a Postgres dump/restored into a new cluster whose
-- LSNs restart below the old ones) is ignored and replaced: the seen bitmaps still dedupe each
-- event by event_id. A bare watermark (written before identities were stored) counts as the
-- current source's. (The position comes first so that an older version reading this value
-- compares it as before: '<position>|...' sorts right after '<position>'.)
-- Returns 1 when applied; 2 when applied in stream mode where no watermark existed (a fresh
-- Redis, or one that lost its data: the caller tells the two apart); {'foreign', source} when
-- applied in stream mode over a watermark of another source (ignored and replaced; source is
-- the stored one); 0 when the whole batch is at or below the watermark (a replay);
-- the watermark itself when the batch straddles it (the caller trims and calls again);
-- or {'dup', k1, j1, k2, j2, ...} naming offsets (bitmap k, j-th offset) already set, in
-- which case nothing was changed: the caller drops those events and calls again.
-- Errors: 'EP_ERR_REDIS_KEY_TYPE <key> ...' before anything is written.
local stream = ARGV[1] == 's'
local nseen = tonumber(ARGV[4])
local ncontents = tonumber(ARGV[7])
local FIRST_BITMAP_ARG = 8
local lastTtl = ARGV[5]
local source = ARGV[6]

local function bad(key, why)
  return redis.error_reply('EP_ERR_REDIS_KEY_TYPE ' .. key .. ' ' .. why .. '; nothing of the batch was written')
end
local function typeOf(key)
  return redis.call('TYPE', key)['ok']
end
-- A count INCRBY takes and can add a batch to: Redis's own integer form (no '+', no leading
-- zero, no '-0': '007' matched a looser pattern, then INCRBY failed half way through the batch,
-- after its seen bits were set) of at most 18 digits, so no batch's count can overflow 64 bits.
local function countable(v)
  if v == '0' then return true end
  local digits = string.match(v, '^%-?([1-9]%d*)$')
  return digits ~= nil and #digits <= 18
end

local wm = false -- the stored position, when it is this source's
local below = false -- a batch of source-less positions at or below the watermark
local foreign = false -- the stored watermark's source, when it is another one
if stream then
  local t = typeOf(KEYS[1])
  if t ~= 'none' and t ~= 'string' then return bad(KEYS[1], 'holds a ' .. t .. ', expected a string (the watermark)') end
  local stored = redis.call('GET', KEYS[1])
  if stored then
    local position, from = string.match(stored, '^([^|]*)|(.*)$')
    if not position then position = stored; from = source end -- a bare watermark: this source's
    if source == '' or from == source then wm = position else foreign = from end
  end
  if wm and source == '' then
    -- Positions without a known source (Debezium; a capture older than the messages' source
    -- field): a connector moved to another Postgres cluster starts again at lower LSNs, so a
    -- batch below the watermark may hold events never counted. The seen bits decide each
    -- event; the watermark only moves forward.
    below = ARGV[3] <= wm
  elseif wm then
    if ARGV[3] <= wm then return 0 end
    if ARGV[2] <= wm then return wm end
  end
end

-- Validation (reads only). Remembers content:last values for the comparison below.
local S = 5 -- KEYS before the seen bitmaps
do
  local t = typeOf(KEYS[2])
  if t ~= 'none' and t ~= 'hash' then return bad(KEYS[2], 'holds a ' .. t .. ', expected a hash (the window)') end
  for i = 3, 5 do
    t = typeOf(KEYS[i])
    if t ~= 'none' and t ~= 'zset' then return bad(KEYS[i], 'holds a ' .. t .. ', expected a sorted set') end
  end
end
for k = 1, nseen do
  local t = typeOf(KEYS[S + k])
  if t ~= 'none' and t ~= 'string' then return bad(KEYS[S + k], 'holds a ' .. t .. ', expected a string (a seen bitmap)') end
end
local a = FIRST_BITMAP_ARG
for k = 1, nseen do a = a + 1 + tonumber(ARGV[a]) end
local contentArgs = a -- ARGV of the first content
local contentKeys = S + nseen + 1 -- KEYS of the first content (its content:count)
local bucketKeys = contentKeys + 2 * ncontents -- KEYS of the first bucket
-- A string key's value (false: none) and, when the key holds another type, the refusal to return.
-- GET both reads the value and refuses a non-string (one call instead of TYPE + GET).
local function stringAt(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then return false, bad(key, 'holds a ' .. typeOf(key) .. ', expected a string') end
  return v, nil
end
local current = {} -- content index (from 0) -> its stored content:last, or false
for c = 0, ncontents - 1 do
  local countKey = KEYS[contentKeys + 2 * c]
  local count, refused = stringAt(countKey)
  if refused then return refused end
  if count and not countable(count) then
    return bad(countKey, 'holds ' .. string.format('%q', string.sub(count, 1, 40)) .. ', expected an integer of at most 18 digits')
  end
  current[c], refused = stringAt(KEYS[contentKeys + 2 * c + 1])
  if refused then return refused end
end
local boardOf = {} -- bucket's KEYS index -> its 10-minute ZSET, when the bucket's minute is in the window
local window = redis.call('HMGET', KEYS[2], 'from', 'to')
local BOARDS = { c = KEYS[3], s = KEYS[4], d = KEYS[5] }
a = contentArgs + 3 * ncontents
for i = bucketKeys, #KEYS do
  local key = KEYS[i]
  local t = typeOf(key)
  if t ~= 'none' and t ~= 'zset' then return bad(key, 'holds a ' .. t .. ', expected a sorted set') end
  if window[1] and window[2] then
    local minute = string.sub(ARGV[a], 3)
    if minute >= window[1] and minute <= window[2] then boardOf[i] = BOARDS[string.sub(ARGV[a], 1, 1)] end
  end
  a = a + 3 + 2 * tonumber(ARGV[a + 2])
end

-- The order key of a stored content:last JSON (its event_ts and event_id), as lastOrder() in JS.
-- The sink writes event_id and event_ts before any free-form field (raw_payload), so the first
-- match is theirs; anything else (a value written by hand) is decoded in full.
local function storedOrder(json)
  local id = string.match(json, '"event_id":(%d+)')
  local ts = string.match(json, '"event_ts":"([^"]*)"')
  if not (id and ts) then
    local ok, event = pcall(cjson.decode, json)
    if not ok or type(event) ~= 'table' or type(event.event_ts) ~= 'string' then return '' end
    id, ts = event.event_id, event.event_ts
  end
  local sign, year, rest = string.match(ts, '^([+-]?)(%d+)(.*)$')
  if not year then return '' end
  local y = tonumber(year)
  if sign == '-' then y = -y end
  return string.format('%07d', y + 1000000) .. rest .. ' ' .. string.format('%020.0f', tonumber(id) or 0)
end

-- First writes: the seen bits. BITFIELD takes many offsets per call; chunks bound the
-- arguments unpack() puts on the stack.
local CHUNK = 500
local dups = {}
local fresh = {} -- per bitmap, the offsets this call set (for the rollback on a duplicate)
a = FIRST_BITMAP_ARG
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
    local old = redis.call('BITFIELD', KEYS[S + k], unpack(args))
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
      redis.call('BITFIELD', KEYS[S + k], unpack(args))
    end
  end
  table.insert(dups, 1, 'dup')
  return dups
end
for k = 1, nseen do
  -- Bitmaps written by older versions carried a TTL; the dedupe must outlive every replay.
  redis.call('PERSIST', KEYS[S + k])
end

a = contentArgs
for c = 0, ncontents - 1 do
  redis.call('INCRBY', KEYS[contentKeys + 2 * c], ARGV[a])
  local stored = current[c]
  if not stored or storedOrder(stored) < ARGV[a + 2] then
    redis.call('SET', KEYS[contentKeys + 2 * c + 1], ARGV[a + 1], 'EX', lastTtl)
  end
  a = a + 3
end
local secondsBoard = KEYS[4]
for i = bucketKeys, #KEYS do
  local key = KEYS[i]
  local board = boardOf[i]
  local ttl = ARGV[a + 1]
  local last = a + 1 + 2 * tonumber(ARGV[a + 2])
  for m = a + 3, last, 2 do
    local member, by = ARGV[m], ARGV[m + 1]
    redis.call('ZINCRBY', key, by, member)
    if board then
      local v = tonumber(redis.call('ZINCRBY', board, by, member))
      if board == secondsBoard then
        local ms = math.floor(v * 1000 + 0.5)
        if ms / 1000 ~= v then redis.call('ZADD', board, string.format('%.3f', ms / 1000), member) end
      end
    end
  end
  redis.call('EXPIRE', key, ttl)
  a = last + 2
end
if stream then
  if source == '' then
    if not below then redis.call('SET', KEYS[1], ARGV[3]) end
  else
    redis.call('SET', KEYS[1], ARGV[3] .. '|' .. source)
  end
  if foreign then return { 'foreign', foreign } end
  if not wm then return 2 end
end
return 1
