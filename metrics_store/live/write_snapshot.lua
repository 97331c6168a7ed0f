-- Write one node's hardware snapshot and its heartbeat, and forget nodes silent for long,
-- atomically and in one round trip per sample.
--
-- KEYS[1] = snapshots (hash)          KEYS[2] = live nodes (sorted set)
-- ARGV[1] = node name                 ARGV[2] = snapshot JSON
-- ARGV[3] = now (epoch s)             ARGV[4] = expiry of the snapshots hash (s)
-- ARGV[5] = prune before (epoch s): nodes whose last heartbeat is older are forgotten
-- Returns the number of nodes forgotten.

local node, snapshot = ARGV[1], ARGV[2]
redis.call('HSET', KEYS[1], node, snapshot)
-- The hash expires only when every sampler has been silent this long.
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], node)

-- Readers ignore stale snapshots already; this only keeps the hash and the heartbeat set from
-- growing with every node that ever lived. The range is usually empty, so this costs a lookup.
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
for _, name in ipairs(dead) do
  redis.call('HDEL', KEYS[1], name)
end
if #dead > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
end
return #dead
