-- Run a list of read commands as one command, so every answer costs one round trip and one
-- command (a pipeline of several cost the client more than Redis's own work).
--
-- KEYS = the keys of all the reads, in order
-- ARGV = for each read: its name, how many KEYS it takes, how many ARGV follow, those ARGV:
--   LRANGE   1         2 start stop
--   ZRANGEBYSCORE 1    2 min max
--   ZCOUNT   1         2 min max
--   HGETALL  1         0
--   EXISTS   <n keys>  0                 for each key, 1 if it exists, else 0
--   TIME     0         0                 Redis's clock: epoch seconds, as a string
--   SINCE    1         1 age_s           the members scored (by Redis's clock) within age_s of
--                                        Redis's clock: liveness never asks the reader's clock
--   FETCH    <n keys>  0                 each key's content, typed: flat [kind, content, ...],
--                                        kind "h" (hash: HGETALL), "z" (sorted set: members
--                                        WITHSCORES) or "n" (no such key: empty)
--   CHANGES  3         2 last_id max     the entries of a shard's change feed (KEYS: the feed,
--                                        its head, its fold state) after last_id: {status,
--                                        newest id, folded id, [id, fields, ...]};
--                                        status "ok", "reset" (last_id is gone, or more than
--                                        max entries followed it: the reader's copy cannot be
--                                        trusted; the entries are then those after the folded
--                                        id, whose bins the histogram hashes do not hold yet)
--                                        or "none" (no feed yet)
-- Returns one reply per read, in order. Only these reads exist: the script writes nothing.
-- (Sums over buckets are the reader's: it keeps their contents, redis/bucket_cache.py.)

local function redis_now()
  local time = redis.call('TIME')
  return tonumber(time[1]) + tonumber(time[2]) / 1000000
end

local KINDS = { hash = 'h', zset = 'z' }

-- One key's content, as FETCH gives it: its kind, and its flat pairs.
local function content(key)
  local kind = KINDS[redis.call('TYPE', key).ok] or 'n'
  if kind == 'h' then
    return kind, redis.call('HGETALL', key)
  elseif kind == 'z' then
    return kind, redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  end
  return kind, {}
end

local function entries_after(feed, first, count)
  local out = {}
  for _, entry in ipairs(redis.call('XRANGE', feed, first, '+', 'COUNT', count)) do
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
  end
  return out
end

-- The entries after last_id, in the same atomic moment as the rest of this call's reads; and
-- the fold state's id: the histogram hashes read in this call hold the bins of the entries up
-- to it, and not those after it (record/fold.lua). A store whose batches wrote their bins at
-- once (no fold state) has folded everything.
local function changes(feed, head_key, state_key, last, max)
  local head = redis.call('GET', head_key)
  if not head then
    return { 'none', '', '', {} }
  end
  local folded = redis.call('HGET', state_key, 'id') or head
  if head == last then
    return { 'ok', head, folded, {} }  -- nothing written since: the common case, O(1)
  end
  local entries = last ~= '' and redis.call('XRANGE', feed, last, '+', 'COUNT', max + 1) or {}
  if #entries == 0 or entries[1][1] ~= last or entries[#entries][1] ~= head then
    -- the copy starts again from what the hashes hold, and the entries not folded into them
    return { 'reset', head, folded, entries_after(feed, '(' .. folded, max) }
  end
  local out = {}
  for e = 2, #entries do
    out[#out + 1] = entries[e][1]
    out[#out + 1] = entries[e][2]
  end
  return { 'ok', head, folded, out }
end

local replies = {}
local k, i = 1, 1
while i <= #ARGV do
  local op, nkeys, nargs = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local first, a = k, i + 3
  k, i = k + nkeys, a + nargs
  local reply
  if op == 'LRANGE' or op == 'ZRANGEBYSCORE' or op == 'ZCOUNT' then
    reply = redis.call(op, KEYS[first], ARGV[a], ARGV[a + 1])
  elseif op == 'EXISTS' then
    reply = {}
    for j = first, first + nkeys - 1 do  -- one key per command: they may be in several slots
      reply[#reply + 1] = redis.call('EXISTS', KEYS[j])
    end
  elseif op == 'TIME' then
    reply = string.format('%.6f', redis_now())
  elseif op == 'SINCE' then
    reply = redis.call('ZRANGEBYSCORE', KEYS[first], redis_now() - tonumber(ARGV[a]), '+inf')
  elseif op == 'FETCH' then
    reply = {}
    for j = first, first + nkeys - 1 do
      local kind, flat = content(KEYS[j])
      reply[#reply + 1] = kind
      reply[#reply + 1] = flat
    end
  elseif op == 'CHANGES' then
    reply = changes(KEYS[first], KEYS[first + 1], KEYS[first + 2], ARGV[a], tonumber(ARGV[a + 1]))
  elseif op == 'HGETALL' then
    reply = redis.call('HGETALL', KEYS[first])
  else
    return redis.error_reply('read.lua: no such read ' .. tostring(op))
  end
  replies[#replies + 1] = reply
end
return replies
