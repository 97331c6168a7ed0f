-- An API replica's heartbeat: its stamp (Redis's clock, TIME) and its client count, and the
-- pruning of replicas silent for long, atomically: a reader never sees the new beat with the
-- old count, or the reverse, and a replica whose clock is off neither prunes the live ones
-- nor looks alive after it stops.
--
-- KEYS[1] = replicas (sorted set)     KEYS[2] = connections (hash)
-- ARGV[1] = replica id                ARGV[2] = its WebSocket client count
-- ARGV[3] = prune after (s): replicas silent this long are forgotten
-- Returns Redis's clock as a string (epoch s): the beat's stamp.

local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local stamp = string.format('%.6f', now)
redis.call('ZADD', KEYS[1], stamp, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
-- Usually empty: this costs a lookup. A pruned replica that was only paused re-adds itself
-- on its next beat.
local before = '(' .. string.format('%.6f', now - tonumber(ARGV[3]))
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', before)
if #dead > 0 then
  redis.call('ZREM', KEYS[1], unpack(dead))
  redis.call('HDEL', KEYS[2], unpack(dead))
end
return stamp
