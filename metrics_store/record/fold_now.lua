-- Fold the entries waiting in a shard's change feed now (fold.lua, which scripts.py puts
-- before this text). A collector's upkeep calls it every beat, so the histogram hashes are
-- within a beat of the feed even when writes stop (redis-cli reads them as they are); an
-- answer never needs it: readers add what waits.
--
-- KEYS[1] = the change feed   KEYS[2] = its fold state   KEYS[3] = the shard's bucket index
-- ARGV[1] = the age (ms) the oldest waiting entry must have reached; 0: fold whatever waits
-- ARGV[2] = the hash fields one fold writes, about (the rest waits for the next)
-- Returns {the number of entries folded, the number still waiting (too young to fold)}.
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local min_age_ms = tonumber(ARGV[1])
local max_writes = tonumber(ARGV[2])
local folded = fold(KEYS[1], KEYS[2], KEYS[3], now_ms, math.huge, min_age_ms, max_writes,
  min_age_ms <= 0)
return { folded, tonumber(redis.call('HGET', KEYS[2], 'behind')) or 0 }
