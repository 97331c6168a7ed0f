-- Write one collector batch atomically: append each event to its capped stream, add the
-- batch's pre-summed counters to the time buckets, push the newest recent-query entries.
-- The collector folds a batch's counters before sending, so the bucket work per batch is a
-- few ZINCRBYs per bucket, not several per event; only the stream append is per event.
--
-- KEYS[1] = query stream              KEYS[2] = routing stream
-- KEYS[3] = live nodes (sorted set)   KEYS[4] = availability (hash)
-- KEYS[5] = bucket index (sorted set)  KEYS[6] = refused events per node (hash)
-- KEYS[7] = all-time totals (sorted set, never expires)
-- KEYS[8] = this batch's id marker
-- KEYS[9..8+ARGV[7]] = the recent-query list of each configured tier; then the bucket keys
-- (Redis Cluster, batch.py: a shard's data call holds a data key in KEYS[3], [4] and [6], the
-- control call a control key in KEYS[1], [2], [5] and [7]: each names its slot, unwritten.)
-- ARGV[1] = batch id ttl (s)          ARGV[2] = stream MAXLEN (approximate)
-- ARGV[3] = retention (s)             ARGV[4] = recent-list length
-- ARGV[5] = node name                 ARGV[6] = the writer's clock (epoch s), checked
-- ARGV[7] = number of recent-query lists
-- ARGV[8..13] = how many query entries, routing entries, increments, pushes, availabilities,
--               retirements
-- ARGV[14] = clock skew tolerance (s; 0 = trust the writer's clock)
-- ARGV[15], ARGV[16] = the oldest and newest event stamps of the batch (epoch s)
-- ARGV[17] = events of this batch already refused for their clock (counted here)
-- ARGV[18] = 1: record the node's heartbeat in KEYS[3]; 0: not (Redis Cluster, where this call's
--            keys are one data shard's and the flusher's heartbeat keeps the node live)
-- ARGV[19] = how many histogram groups
-- ARGV[20..] = those sections in that order, the histogram groups last:
--   query entry:   "ts tier latency_ms tokens generation_ms error"      (1 value)
--   routing entry: "ts complexity tier score decision_ms fallback"      (1 value)
--   increment:     KEYS index of the bucket, member, amount            (3 values)
--   push:          KEYS index of the recent list, entry                (2 values)
--   availability:  field "<node>:<tier>", value "<available>/<total>"  (2 values)
--   retirement:    KEYS index of a bucket, epoch second it retires, its TTL (s)  (3 values)
--   histogram group: n, the KEYS indexes of its n buckets (one per level), m, then m pairs
--                  field, amount: first "sum" and the total ms (HINCRBYFLOAT), then each
--                  occupied bin and its count (HINCRBY), added to every one of the n buckets
-- Returns the number of stream entries written, or -1 if this batch id was written before;
-- an error "CLOCKSKEW <redis now>" if the writer's clock is further than the tolerance from
-- Redis's, or an event is older than retention or stamped in the future (nothing written: the
-- collector sets those events aside and sends the rest).

-- A batch written before (its reply lost) is done, whatever the clock says now. Its marker
-- lives on from this retry: a batch may be retried for longer than the marker's first life
-- (replicas that have not acknowledged it yet), and must still count once.
if redis.call('EXISTS', KEYS[8]) == 1 then
  redis.call('EXPIRE', KEYS[8], ARGV[1])
  return -1
end

-- Redis's clock is the one clock every writer shares. A writer whose own clock (ARGV[6], read
-- as it encoded this batch) is off by more than the tolerance must not write at all: its
-- stamps would land in buckets hours away, where retention deletes them or they crowd out
-- others. From a writer whose clock is right, events may be old (buffered through an outage)
-- but not older than retention, and not from the future.
local tolerance = tonumber(ARGV[14])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
-- The heartbeat is Redis's clock even for a store that trusts its writers' event stamps.
local beat = now
if tolerance > 0 then
  local events = tonumber(ARGV[8]) + tonumber(ARGV[9]) + tonumber(ARGV[12])
  local skewed = math.abs(tonumber(ARGV[6]) - now) > tolerance
  local too_old = tonumber(ARGV[15]) < now - tonumber(ARGV[3])
  local too_new = tonumber(ARGV[16]) > now + tolerance
  if events > 0 and (skewed or too_old or too_new) then
    return redis.error_reply('CLOCKSKEW ' .. string.format('%.6f', now))
  end
end

-- The marker makes a retried batch idempotent: a retry after a timeout whose first attempt
-- did reach Redis finds the marker and writes nothing.
if not redis.call('SET', KEYS[8], '1', 'NX', 'EX', ARGV[1]) then
  return -1
end

local maxlen, node = ARGV[2], ARGV[5]
local queries, decisions = tonumber(ARGV[8]), tonumber(ARGV[9])
local increments, pushes = tonumber(ARGV[10]), tonumber(ARGV[11])
local availabilities, retirements = tonumber(ARGV[12]), tonumber(ARGV[13])
local i = 20
if tonumber(ARGV[17]) > 0 then
  redis.call('HINCRBY', KEYS[6], node, ARGV[17])
end

-- An entry travels as one space-separated argument: one argument per event instead of six
-- keeps the client's encoding cost down; the stream still gets one field per value.
local SIX = '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$'
for _ = 1, queries do
  local ts, tier, latency, tokens, generation, err = string.match(ARGV[i], SIX)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
    'ts', ts, 'node', node, 'tier', tier, 'latency_ms', latency,
    'tokens', tokens, 'generation_ms', generation, 'error', err)
  i = i + 1
end
for _ = 1, decisions do
  local ts, complexity, tier, score, ms, fallback = string.match(ARGV[i], SIX)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*',
    'ts', ts, 'node', node, 'complexity', complexity, 'tier', tier,
    'score', score, 'decision_ms', ms, 'fallback', fallback)
  i = i + 1
end
for _ = 1, increments do
  redis.call('ZINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 2], ARGV[i + 1])
  i = i + 3
end
for _ = 1, pushes do
  redis.call('LPUSH', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  i = i + 2
end
for _ = 1, availabilities do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
-- The index lets collectors delete buckets by the store's own clock (metrics_store/record/retention.py);
-- EXPIRE below is the backstop for a store nobody writes to any more.
-- Each bucket lives for its level's retention after its last write (coarse history buckets
-- for days, fine ones for hours): EXPIRE here, once per key, not per event.
for _ = 1, retirements do
  local key = KEYS[tonumber(ARGV[i])]
  redis.call('ZADD', KEYS[5], 'GT', ARGV[i + 1], key)
  redis.call('EXPIRE', key, ARGV[i + 2])
  i = i + 3
end
-- The histograms were summed per fine bucket by the collector; each group's bins go into the
-- bucket of every level at once, so the roll-ups are exact sums written in the same call.
for _ = 1, tonumber(ARGV[19]) do
  local n = tonumber(ARGV[i])
  local first = i + 1
  local m = tonumber(ARGV[first + n])
  local f = first + n + 1
  for j = first, first + n - 1 do
    local key = KEYS[tonumber(ARGV[j])]
    redis.call('HINCRBYFLOAT', key, ARGV[f], ARGV[f + 1])
    for b = f + 2, f + 2 * m - 1, 2 do
      redis.call('HINCRBY', key, ARGV[b], ARGV[b + 1])
    end
  end
  i = f + 2 * m
end

-- Once per list, not per event: each recent list lives for the retention period after its
-- last write and keeps only its newest entries.
local retention = ARGV[3]
local last_recent = 8 + tonumber(ARGV[7])
local keep = tonumber(ARGV[4]) - 1
for k = 9, last_recent do
  redis.call('LTRIM', KEYS[k], 0, keep)
  redis.call('EXPIRE', KEYS[k], retention)
end
-- The availability hash never expires: a node reports only when its models change, and its
-- latest report stands while it is live (readers skip dead nodes; nodes x tiers bounds it).
if ARGV[18] == '1' then
  redis.call('ZADD', KEYS[3], beat, node)
end
return queries + decisions
