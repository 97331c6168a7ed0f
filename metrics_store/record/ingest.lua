-- Write one collector batch atomically: append each event to its capped stream, add the
-- batch's pre-summed counters to the time buckets, push the newest recent-query entries, and
-- log its histogram bins in the change feed, from which a fold adds many batches' bins to the
-- histogram hashes at once (fold.lua). The collector sums a batch's counters and bins before
-- sending, so the bucket work per batch is a few ZINCRBYs per bucket, not several per event;
-- only the stream append is per event.
--
-- KEYS[1] = query stream              KEYS[2] = routing stream
-- KEYS[3] = live nodes (sorted set)   KEYS[4] = availability (hash)
-- KEYS[5] = bucket index (sorted set)  KEYS[6] = refused events per node (hash)
-- KEYS[7] = all-time totals (sorted set, never expires)
-- KEYS[8] = this batch's id marker    KEYS[9] = the change feed (stream)
-- KEYS[10] = the change feed's newest id (string)
-- KEYS[11] = the change feed's fold state (hash, fold.lua)
-- KEYS[12..11+recent_lists] = the recent-query list of each configured tier; then the bucket
-- and totals keys
-- (Redis Cluster, batch.py: a shard's data call holds a data key in KEYS[3], [4] and [6], the
-- control call a control key in KEYS[1], [2], [5], [7], [9], [10] and [11]: each names its
-- slot, unwritten.)
-- (scripts.py puts fold.lua's text before this one.)
--
-- ARGV[1] = the header: a JSON object (metrics_store/record/batch.py), read by name.
--   version           the format: FORMAT below, or the batch is refused unwritten
--   batch_ttl_s       how long the batch id marker lives (s)
--   stream_maxlen     the streams' approximate MAXLEN
--   feed_maxlen       the change feed's approximate MAXLEN
--   fold_entries      fold (fold.lua) once this many feed entries wait
--   fold_age_ms       or once the oldest waiting entry is this old (ms, Redis's clock)
--   fold_writes       a fold's bound: the hash fields one call writes, about
--   retention_s       how long a recent list lives after its last write (s)
--   recent_len        entries each recent list keeps
--   recent_lists      how many recent lists follow KEYS[11]
--   node              the writer's node name
--   now_s             the writer's clock as it encoded the batch (epoch s)
--   skew_tolerance_s  how far that clock may be from Redis's (0: trust the writer's clock)
--   oldest_s, newest_s  the batch's oldest and newest event stamps (epoch s)
--   refused           events of this batch already refused for their clock (counted here)
--   heartbeat         true: record the node's beat in KEYS[3]; false: not (Redis Cluster,
--                     where the flusher's own beat keeps the node live)
--   claim_ttl_s       the TTL of the states the claims set (s; only read where there are any)
--   sections          [[name, length], ...]: the sections filling ARGV[2..], in that order
-- ARGV[2..] = the sections (one the header leaves out is empty):
--   queries       "ts tier latency_ms tokens generation_ms error"      (1 value per query)
--   decisions     "ts complexity tier score decision_ms fallback"      (1 value per decision)
--   increments    KEYS index of a sorted set, member, amount           (3 values each)
--   pushes        KEYS index of a recent list, entry                   (2 values each)
--   availability  field "<node>:<tier>", value "<available>/<total>"   (2 values each)
--   histograms    one value, a JSON array of groups [[KEYS indexes of its buckets, one per
--                 level], sum in ms, [field, count, ...]]: each occupied bin and its count,
--                 to add to every one of the group's buckets: not written here, but carried
--                 by the batch's change-feed entry until a fold (fold.lua)
--   retirements   KEYS index of a bucket, epoch second it retires, its TTL (s)  (3 each)
--   claims        KEYS index of a stream's state, the token the caller read ('' for none),
--                 the state that replaces it                            (3 values each)
-- Returns the number of stream entries written, or -1 if this batch id was written before;
-- where a claim's state is no longer the one read, [KEYS index, state found ('' for none), ...]
-- of those claims, and nothing written;
-- an error "CLOCKSKEW <redis now>" if the writer's clock is further than the tolerance from
-- Redis's, or an event is older than retention or stamped in the future (nothing written: the
-- collector sets those events aside and sends the rest); an error "ERR ingest batch ..." for
-- a batch of another format or with a section this script does not know (nothing written).

local FORMAT = 4
local SECTIONS = {
  queries = true, decisions = true, increments = true, pushes = true,
  availability = true, histograms = true, retirements = true, claims = true,
}

local function refuse(problem)
  return nil, 'ERR ingest batch ' .. problem .. ', this script reads v' .. FORMAT
end

-- Where each named section lies in ARGV (name -> {first, last}), or nil and the problem if
-- a section is unknown or repeated, or the sections do not fill ARGV exactly.
local function place_sections(sections)
  local places, at = {}, 2
  for _, section in ipairs(sections) do
    local name, length = section[1], section[2]
    if not SECTIONS[name] or places[name] or type(length) ~= 'number' then
      return nil, 'section ' .. tostring(name) .. ' is unknown or repeated'
    end
    places[name] = {at, at + length - 1}
    at = at + length
  end
  if at ~= #ARGV + 1 then
    return nil, 'sections span ' .. (at - 2) .. ' values, ARGV holds ' .. (#ARGV - 1)
  end
  return places
end

-- The header, or nil and the error to answer. Checked before anything is read or written: a
-- collector and a script of different versions must fail loudly, not misread each other.
local function read_batch()
  local ok, batch = pcall(cjson.decode, ARGV[1] or '')
  if not ok or type(batch) ~= 'table' then
    -- v1's ARGV[1] was the batch id TTL, a bare number
    local v1 = ok and type(batch) == 'number' and #ARGV > 1
    return refuse(v1 and 'format v1 (positional arguments)' or 'header is not a JSON object')
  end
  if batch.version ~= FORMAT then
    return refuse('format v' .. tostring(batch.version))
  end
  local places, problem = place_sections(batch.sections or {})
  if not places then
    return refuse('format v' .. FORMAT .. ': ' .. problem)
  end
  batch.places = places
  return batch
end

-- The first and last ARGV index of a section (an empty range for an absent one).
local function span(batch, name)
  local place = batch.places[name]
  if place then
    return place[1], place[2]
  end
  return 1, 0
end

-- Redis's clock is the one clock every writer shares. A writer whose own clock (now_s, read
-- as it encoded this batch) is off by more than the tolerance must not write at all: its
-- stamps would land in buckets hours away, where retention deletes them or they crowd out
-- others. From a writer whose clock is right, events may be old (buffered through an outage)
-- but not older than retention, and not from the future.
-- Returns the heartbeat's time (Redis's clock, even for a store that trusts its writers'
-- event stamps: liveness is never judged by a writer's clock), or nil and the CLOCKSKEW error.
local function check_clock(batch, events)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
  local tolerance = batch.skew_tolerance_s
  if tolerance <= 0 then
    return now
  end
  local skewed = math.abs(batch.now_s - now) > tolerance
  local too_old = batch.oldest_s < now - batch.retention_s
  local too_new = batch.newest_s > now + tolerance
  if events > 0 and (skewed or too_old or too_new) then
    return nil, 'CLOCKSKEW ' .. string.format('%.6f', now)
  end
  return now
end

-- An entry travels as one space-separated argument: one argument per event instead of six
-- keeps the client's encoding cost down; the stream still gets one field per value.
local SIX = '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$'

local function append_queries(first, last, node, maxlen)
  for i = first, last do
    local ts, tier, latency, tokens, generation, err = string.match(ARGV[i], SIX)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
      'ts', ts, 'node', node, 'tier', tier, 'latency_ms', latency,
      'tokens', tokens, 'generation_ms', generation, 'error', err)
  end
end

local function append_decisions(first, last, node, maxlen)
  for i = first, last do
    local ts, complexity, tier, score, ms, fallback = string.match(ARGV[i], SIX)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*',
      'ts', ts, 'node', node, 'complexity', complexity, 'tier', tier,
      'score', score, 'decision_ms', ms, 'fallback', fallback)
  end
end

local function add_increments(first, last)
  for i = first, last, 3 do
    redis.call('ZINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 2], ARGV[i + 1])
  end
end

local function push_recent(first, last)
  for i = first, last, 2 do
    redis.call('LPUSH', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  end
end

-- The availability hash never expires: a node reports only when its models change, and its
-- latest report stands while it is live (readers skip dead nodes; nodes x tiers bounds it).
local function set_availability(first, last)
  for i = first, last, 2 do
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  end
end

-- The index lets collectors delete buckets by the store's own clock
-- (metrics_store/record/retention.py); EXPIRE is the backstop for a store nobody writes to
-- any more. Each bucket lives for its level's retention after its last write (coarse history
-- buckets for days, fine ones for hours): EXPIRE here, once per key, not per event; after
-- every other write, as EXPIRE leaves a key that does not exist yet without a TTL.
local function retire(first, last)
  for i = first, last, 3 do
    local key = KEYS[tonumber(ARGV[i])]
    redis.call('ZADD', KEYS[5], 'GT', ARGV[i + 1], key)
    redis.call('EXPIRE', key, ARGV[i + 2])
  end
end

-- Once per list, not per event: each recent list lives for the retention period after its
-- last write and keeps only its newest entries.
local function trim_recent(batch)
  for k = 12, 11 + batch.recent_lists do
    redis.call('LTRIM', KEYS[k], 0, batch.recent_len - 1)
    redis.call('EXPIRE', KEYS[k], batch.retention_s)
  end
end

-- Readers keep the contents of the buckets they read (metrics_store/redis/bucket_cache.py)
-- and, before each answer, read the entries after the last one they saw. An entry is this
-- batch's counters (written above) and histogram bins (written by a later fold, fold.lua),
-- with the KEYS they index and the buckets' retirements: a reader adds them to the contents
-- it holds, and its next answer includes them (flush-then-GET) without reading the buckets
-- again. Then the fold, once enough entries wait: this batch's bins may be folded at once.
local function announce_changes(batch, now_s)
  local first_i, last_i = span(batch, 'increments')
  local first_h, last_h = span(batch, 'histograms')
  if last_i < first_i and last_h < first_h then
    return
  end
  local previous = redis.call('GET', KEYS[10])
  local id = redis.call('XADD', KEYS[9], 'MAXLEN', '~', batch.feed_maxlen, '*',
    'keys', table.concat(KEYS, ' '),
    'increments', table.concat(ARGV, ' ', first_i, last_i),
    'histograms', table.concat(ARGV, ' ', first_h, last_h),
    'retirements', table.concat(ARGV, ' ', span(batch, 'retirements')))
  redis.call('SET', KEYS[10], id)
  note_entry(KEYS[11], id, previous)
  local now_ms = math.floor(now_s * 1000)
  fold(KEYS[9], KEYS[11], KEYS[5], now_ms, batch.fold_entries, batch.fold_age_ms,
    batch.fold_writes, false)
end

-- A claim moves a cumulative stream's state (sources/otlp/temporality.py) on to the point
-- whose delta this batch writes: the data and the state move together or not at all, so any
-- replica may take the stream's next point, and a retry finds its point taken. A state is
-- "<token> <payload>"; the token names its content. The claims lost to another writer, with
-- the states found, for the caller to decide again; none: all may be taken.
local function lost_claims(first, last)
  local lost = {}
  for i = first, last, 3 do
    local found = redis.call('GET', KEYS[tonumber(ARGV[i])]) or ''
    if string.match(found, '^%S*') ~= ARGV[i + 1] then
      lost[#lost + 1] = tonumber(ARGV[i])
      lost[#lost + 1] = found
    end
  end
  return lost
end

local function set_claims(first, last, ttl_s)
  for i = first, last, 3 do
    redis.call('SET', KEYS[tonumber(ARGV[i])], ARGV[i + 2], 'EX', ttl_s)
  end
end

local batch, refusal = read_batch()
if not batch then
  return redis.error_reply(refusal)
end
local first_query, last_query = span(batch, 'queries')
local first_decision, last_decision = span(batch, 'decisions')
local first_field, last_field = span(batch, 'availability')
local entries = (last_query - first_query + 1) + (last_decision - first_decision + 1)

-- A batch written before (its reply lost) is done, whatever the clock says now. Its marker
-- lives on from this retry: a batch may be retried for longer than the marker's first life
-- (replicas that have not acknowledged it yet), and must still count once.
if redis.call('EXISTS', KEYS[8]) == 1 then
  redis.call('EXPIRE', KEYS[8], batch.batch_ttl_s)
  return -1
end
local beat, skew = check_clock(batch, entries + (last_field - first_field + 1))
if not beat then
  return redis.error_reply(skew)
end
local first_claim, last_claim = span(batch, 'claims')
local lost = lost_claims(first_claim, last_claim)
if #lost > 0 then
  return lost
end
-- The marker makes a retried batch idempotent: a retry after a timeout whose first attempt
-- did reach Redis finds the marker and writes nothing.
if not redis.call('SET', KEYS[8], '1', 'NX', 'EX', batch.batch_ttl_s) then
  return -1
end

local node, maxlen = batch.node, tostring(batch.stream_maxlen)  -- text once, not per XADD
if batch.refused > 0 then
  redis.call('HINCRBY', KEYS[6], node, batch.refused)
end
append_queries(first_query, last_query, node, maxlen)
append_decisions(first_decision, last_decision, node, maxlen)
add_increments(span(batch, 'increments'))
push_recent(span(batch, 'pushes'))
set_availability(first_field, last_field)
retire(span(batch, 'retirements'))
set_claims(first_claim, last_claim, batch.claim_ttl_s)
trim_recent(batch)
announce_changes(batch, beat)
if batch.heartbeat then
  redis.call('ZADD', KEYS[3], beat, node)
end
return entries
