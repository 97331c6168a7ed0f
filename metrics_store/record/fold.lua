-- Folding: the histogram bins of many batches added to the histogram hashes at once.
--
-- A batch does not write its histogram bins (ingest.lua): its change-feed entry carries them,
-- and the feed is the log of bins not yet in the hashes. Folding adds the entries after the
-- fold state's `id` to the hashes, summed per bucket and bin over all of them first, so the
-- writes follow the distinct bins of the folded batches, not the bins of each batch at every
-- level: at high rates most batches of a bucket share their bins. Readers add the
-- entries after `id` to what the hashes hold (redis/bucket_cache.py), so every answer is as
-- exact before a fold as after it, and a fold changes no answer.
--
-- A fold runs inside one script call (ingest.lua's, or fold_now.lua's), so it is atomic: a
-- fold killed or failed over half-way has not happened, and the next one folds the same
-- entries once. The fold state is a hash beside the feed:
--   id      the newest entry whose bins the hashes hold (entries up to it are folded)
--   behind  how many entries follow it
--   first   the oldest of those (its id's milliseconds are Redis's clock when it was added)
-- This text is a library: scripts.py puts it before ingest.lua and fold_now.lua.

local function split(text)
  local out = {}
  for token in string.gmatch(text or '', '%S+') do
    out[#out + 1] = token
  end
  return out
end

-- One entry's histogram groups (ingest.lua's `histograms`, JSON), added into `groups` (the
-- keys of a group, joined -> {keys, fields in order, field -> count, sum}); `ttls` gets each
-- bucket key's TTL (s) from the entry's retirements (the all-time hashes have none). Returns
-- the hash fields the entry writes, at most (before merging with the other entries').
local function gather(fields, groups, order, ttls)
  -- An entry with "sums" comes from a collector of the format before folding (ingest v3, in a
  -- rolling upgrade): its batch wrote its bins at once.
  if fields.sums or not fields.histograms or fields.histograms == '' then
    return 0
  end
  local writes = 0
  local names = split(fields.keys)
  local retire = split(fields.retirements)
  local ttl_of = {}
  for r = 1, #retire, 3 do
    ttl_of[tonumber(retire[r])] = retire[r + 2]
  end
  for _, g in ipairs(cjson.decode(fields.histograms)) do
    local indexes, total, flat = g[1], g[2], g[3]
    local keys = {}
    for j, index in ipairs(indexes) do
      keys[j] = names[index]
      if ttl_of[index] then
        ttls[names[index]] = ttl_of[index]
      end
    end
    local signature = table.concat(keys, ' ')
    local group = groups[signature]
    if not group then
      group = { keys = keys, fields = {}, counts = {}, sum = 0 }
      groups[signature] = group
      order[#order + 1] = signature
    end
    group.sum = group.sum + total
    writes = writes + #keys * (#flat / 2 + 1)
    local counts, named = group.counts, group.fields
    for b = 1, #flat, 2 do
      local field = flat[b]  -- a bin's index, or "err:<ppm>", as text
      local have = counts[field]
      if have then
        counts[field] = have + flat[b + 1]
      else
        counts[field] = flat[b + 1]
        named[#named + 1] = field
      end
    end
  end
  return writes
end

-- Add counts to a hash's fields: one HMGET and one HSET per 500 fields, not one HINCRBY each
-- (the script is atomic, so reading and setting is as exact as incrementing).
local function add_counts(key, fields, counts)
  for first = 1, #fields, 500 do
    local last = math.min(first + 499, #fields)
    local have = redis.call('HMGET', key, unpack(fields, first, last))
    local pairs_ = {}
    for i = first, last do
      local field = fields[i]
      pairs_[#pairs_ + 1] = field
      -- a whole number as an argument reaches Redis as its digits
      pairs_[#pairs_ + 1] = (tonumber(have[i - first + 1]) or 0) + counts[field]
    end
    redis.call('HSET', key, unpack(pairs_))
  end
end

-- The gathered bins into the hashes: per key, the counts of every group holding it summed,
-- then added; "sum" by HINCRBYFLOAT, written in full (%.17g: a double exactly; the collectors
-- send sums in 1/1024 ms, so adding them in any order is exact). A bucket lives for its
-- level's retention after this write; one that retention has deleted since its batch (gone
-- from the bucket index) is not made again.
local function write_groups(groups, order, ttls, index_key)
  local gone = {}
  for key in pairs(ttls) do
    if not redis.call('ZSCORE', index_key, key) then
      gone[key] = true
    end
  end
  local holding, keys = {}, {}  -- key -> the groups holding it; keys in first-seen order
  for _, signature in ipairs(order) do
    local group = groups[signature]
    for _, key in ipairs(group.keys) do
      if not gone[key] then
        if not holding[key] then
          holding[key] = {}
          keys[#keys + 1] = key
        end
        table.insert(holding[key], group)
      end
    end
  end
  for _, key in ipairs(keys) do
    local parts = holding[key]
    local fields, counts, sum = parts[1].fields, parts[1].counts, parts[1].sum
    if #parts > 1 then
      fields, counts = {}, {}
      sum = 0
      for _, group in ipairs(parts) do
        sum = sum + group.sum
        for _, field in ipairs(group.fields) do
          local have = counts[field]
          if have then
            counts[field] = have + group.counts[field]
          else
            counts[field] = group.counts[field]
            fields[#fields + 1] = field
          end
        end
      end
    end
    if #fields > 0 then
      add_counts(key, fields, counts)
    end
    redis.call('HINCRBYFLOAT', key, 'sum', string.format('%.17g', sum))
  end
  for key, ttl in pairs(ttls) do
    if not gone[key] then
      redis.call('EXPIRE', key, ttl)
    end
  end
end

local function entry_fields(flat)
  local fields = {}
  for f = 1, #flat, 2 do
    fields[flat[f]] = flat[f + 1]
  end
  return fields
end

-- Fold the entries after the state's id when `force` says so, when `max_behind` or more wait,
-- or when the oldest of them is `max_age_ms` old (Redis's clock, `now_ms`); `index_key` is
-- the shard's bucket index. One call folds the oldest entries up to about `max_writes` hash
-- fields (at least one entry), so it holds Redis for a bounded time even when every entry's
-- bins are spread over many buckets (a backfill); the rest wait for the next fold, which
-- each later batch brings. Returns the number of entries folded.
local function fold(feed, state_key, index_key, now_ms, max_behind, max_age_ms, max_writes, force)
  local state = redis.call('HMGET', state_key, 'id', 'behind', 'first')
  local cursor, behind, first = state[1], tonumber(state[2]) or 0, state[3]
  if not cursor or behind == 0 then
    return 0
  end
  local age = first and now_ms - tonumber(string.match(first, '^(%d+)')) or 0
  if not force and behind < max_behind and age < max_age_ms then
    return 0
  end
  local entries = redis.call('XRANGE', feed, '(' .. cursor, '+')
  local groups, order, ttls = {}, {}, {}
  local taken, writes = 0, 0
  while taken < #entries and (taken == 0 or writes < max_writes) do
    taken = taken + 1
    writes = writes + gather(entry_fields(entries[taken][2]), groups, order, ttls)
  end
  write_groups(groups, order, ttls, index_key)
  local newest = taken > 0 and entries[taken][1] or cursor
  redis.call('HSET', state_key, 'id', newest, 'behind', #entries - taken)
  if taken < #entries then
    redis.call('HSET', state_key, 'first', entries[taken + 1][1])
  else
    redis.call('HDEL', state_key, 'first')
  end
  return taken
end

-- Count an entry just added to the feed (ingest.lua): the first of a store starts the state
-- at the feed's previous head (the entries before it, of a format that wrote its bins at
-- once, are folded already).
local function note_entry(state_key, id, previous_head)
  local state = redis.call('HMGET', state_key, 'id', 'behind')
  if not state[1] then
    redis.call('HSET', state_key, 'id', previous_head or '0-0', 'behind', 0)
  end
  if (tonumber(state[2]) or 0) == 0 then
    redis.call('HSET', state_key, 'first', id)
  end
  redis.call('HINCRBY', state_key, 'behind', 1)
end
