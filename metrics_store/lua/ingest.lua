-- Write one collector batch: append each event to its capped stream and fold it into its
-- time buckets, atomically, so a batch is either wholly counted or not at all.
--
-- KEYS[1] = query stream              KEYS[2] = routing stream
-- KEYS[3] = live nodes (sorted set)   KEYS[4] = availability (hash)
-- KEYS[5] = this batch's id marker
-- KEYS[6..5+ARGV[7]] = the recent-query list of each configured tier; then the bucket keys
-- ARGV[1] = batch id ttl (s)          ARGV[2] = stream MAXLEN (approximate)
-- ARGV[3] = retention (s)             ARGV[4] = recent-list length
-- ARGV[5] = node name                 ARGV[6] = now (epoch s), the node's heartbeat
-- ARGV[7] = number of recent-query lists
-- ARGV[8..] = events, each a kind then its fields; bucket and list fields are KEYS indexes:
--   'q' ts tier latency_ms tokens generation_ms error fine rollup recent        (10 values)
--   'r' ts complexity tier score decision_ms fallback fine rollup               (9 values)
--   'a' tier available total                                                   (4 values)
-- Returns the number of events written, or -1 if this batch id was written before.

-- The marker makes a retried batch idempotent: a retry after a timeout whose first attempt
-- did reach Redis finds the marker and writes nothing.
if not redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[1]) then
  return -1
end

local maxlen = ARGV[2]
local node = ARGV[5]
local written = 0
local i = 8
local n = #ARGV

while i <= n do
  local kind = ARGV[i]
  if kind == 'q' then
    local tier, latency, err = ARGV[i + 2], ARGV[i + 3], ARGV[i + 6]
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
      'ts', ARGV[i + 1], 'node', node, 'tier', tier, 'latency_ms', latency,
      'tokens', ARGV[i + 4], 'generation_ms', ARGV[i + 5], 'error', err)
    for _, b in ipairs({ ARGV[i + 7], ARGV[i + 8] }) do
      local bucket = KEYS[tonumber(b)]
      redis.call('ZINCRBY', bucket, 1, 'count:' .. tier)
      redis.call('ZINCRBY', bucket, latency, 'latency_ms:' .. tier)
      if err == '1' then
        redis.call('ZINCRBY', bucket, 1, 'errors:' .. tier)
      end
    end
    redis.call('LPUSH', KEYS[tonumber(ARGV[i + 9])],
      ARGV[i + 4] .. ' ' .. ARGV[i + 5] .. ' ' .. latency)
    i = i + 10
  elseif kind == 'r' then
    local cx, tier, score, ms, fb = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*',
      'ts', ARGV[i + 1], 'node', node, 'complexity', cx, 'tier', tier, 'score', score,
      'decision_ms', ms, 'fallback', fb)
    local cell = cx .. ':' .. tier
    for _, b in ipairs({ ARGV[i + 7], ARGV[i + 8] }) do
      local bucket = KEYS[tonumber(b)]
      redis.call('ZINCRBY', bucket, 1, 'count:' .. cell)
      redis.call('ZINCRBY', bucket, score, 'score:' .. cell)
      redis.call('ZINCRBY', bucket, ms, 'decision_ms')
      if fb == '1' then
        redis.call('ZINCRBY', bucket, 1, 'fallbacks')
      end
    end
    i = i + 9
  elseif kind == 'a' then
    redis.call('HSET', KEYS[4], node .. ':' .. ARGV[i + 1], ARGV[i + 2] .. '/' .. ARGV[i + 3])
    i = i + 4
  else
    return redis.error_reply('unknown event kind ' .. tostring(kind))
  end
  written = written + 1
end

-- Once per key, not per event: every bucket and list lives for the retention period after
-- its last write, and each recent list keeps only its newest entries.
local retention = ARGV[3]
local last_recent = 5 + tonumber(ARGV[7])
local keep = tonumber(ARGV[4]) - 1
for k = 6, #KEYS do
  if k <= last_recent then
    redis.call('LTRIM', KEYS[k], 0, keep)
  end
  redis.call('EXPIRE', KEYS[k], retention)
end
redis.call('EXPIRE', KEYS[4], retention)
redis.call('ZADD', KEYS[3], ARGV[6], node)
return written
