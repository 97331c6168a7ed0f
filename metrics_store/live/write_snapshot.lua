-- Write one node's hardware snapshot and its heartbeat, and forget nodes silent for long,
-- atomically and in one round trip per sample. Every stamp that decides liveness here is
-- Redis's clock (TIME), never the sampler's: a sampler whose clock runs hours fast must
-- neither prune the other nodes nor look alive for hours after it stops.
--
-- KEYS[1] = snapshots (hash)          KEYS[2] = live nodes (sorted set)
-- ARGV[1] = node name                 ARGV[2] = snapshot JSON: an object without "stored_at"
-- ARGV[3] = keep (s): the snapshots hash expires, and a node is forgotten, this long after
--           its last heartbeat
-- Returns {the number of nodes forgotten, Redis's clock as a string (epoch s)}.

local node, keep = ARGV[1], tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local stamp = string.format('%.6f', now)
if string.sub(ARGV[2], -1) ~= '}' then
  return redis.error_reply('write_snapshot.lua: the snapshot is not a JSON object')
end
-- The freshness readers judge a snapshot by: Redis's clock as it was stored.
local snapshot = string.sub(ARGV[2], 1, -2) .. ',"stored_at":' .. stamp .. '}'
redis.call('HSET', KEYS[1], node, snapshot)
-- The hash expires only when every sampler has been silent this long.
redis.call('EXPIRE', KEYS[1], keep)
redis.call('ZADD', KEYS[2], stamp, node)

-- Readers ignore stale snapshots already; this only keeps the hash and the heartbeat set from
-- growing with every node that ever lived. The range is usually empty, so this costs a lookup.
local before = '(' .. string.format('%.6f', now - keep)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', before)
for _, name in ipairs(dead) do
  redis.call('HDEL', KEYS[1], name)
end
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', before)
end
return {#dead, stamp}
