-- Claim the next point of OTLP cumulative streams: compare-and-set, one stream key at a time.
-- KEYS[i] = a stream's state (metrics_store/redis/keys.py otlp_stream), all on one slot
-- ARGV[1] = the states' TTL (s); ARGV[2i] = the state the caller read for KEYS[i] ('' for
-- none), ARGV[2i+1] = the state it replaces it with.
-- Returns, per key: 1 where the state was still the one read (now replaced), else the state
-- found ('' for none), for the caller to decide again: another replica took a point first.
local out = {}
for i = 1, #KEYS do
  local current = redis.call('GET', KEYS[i])
  local expected = ARGV[2 * i]
  if (current == false and expected == '') or current == expected then
    redis.call('SET', KEYS[i], ARGV[2 * i + 1], 'EX', ARGV[1])
    out[i] = 1
  else
    out[i] = current or ''
  end
end
return out
