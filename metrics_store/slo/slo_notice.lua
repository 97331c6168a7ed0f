-- The objectives' alerts, kept honest across replicas (slo/outbox.py).
--
-- ARGV[1] = "change": an objective's state moves, with its webhook notice, only if the stored
--   state is still the one the caller compared with and no later tick decided after it:
--     KEYS[1] = states (hash)  KEYS[2] = notices (stream)
--     ARGV[2] = objective      ARGV[3] = the state compared with ('' for none stored)
--     ARGV[4] = the new record (JSON: state, since, tier; '' deletes it: the objective was
--               removed)                                  ARGV[5] = the tick (epoch s)
--     ARGV[6] = the notice's body ('' for none)         ARGV[7] = the outbox's MAXLEN
--   Returns 1 if stored, 0 if another replica's tick got there first.
-- ARGV[1] = "sent": a notice taken by the receiver, recorded only by the lease's holder:
--     KEYS[1] = progress (hash)  KEYS[2] = notices (stream)  KEYS[3] = lease (string)
--     ARGV[2] = holder           ARGV[3] = the notice's id
--   Returns 1 if recorded, 0 if the lease is no longer the holder's (the notice may then be
--   sent again by the new holder: at least once, never silently lost).
-- ARGV[1] = "release": the lease deleted if the caller still holds it.
--     KEYS[1] = lease   ARGV[2] = holder

local op = ARGV[1]
if op == 'change' then
  local stored = redis.call('HGET', KEYS[1], ARGV[2])
  local state, since = '', -1
  if stored then
    local record = cjson.decode(stored)
    state, since = record.state, tonumber(record.since)
  end
  if state ~= ARGV[3] or tonumber(ARGV[5]) <= since then
    return 0
  end
  if ARGV[4] == '' then
    redis.call('HDEL', KEYS[1], ARGV[2])
  else
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
  end
  if ARGV[6] ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'body', ARGV[6])
  end
  return 1
elseif op == 'sent' then
  if redis.call('GET', KEYS[3]) ~= ARGV[2] then
    return 0
  end
  redis.call('HSET', KEYS[1], 'sent_id', ARGV[3], 'attempts', 0, 'retry_at', 0)
  redis.call('HINCRBY', KEYS[1], 'sent', 1)
  redis.call('XDEL', KEYS[2], ARGV[3])
  return 1
elseif op == 'release' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    redis.call('DEL', KEYS[1])
  end
  return 1
end
return redis.error_reply('ERR slo_notice: unknown operation ' .. tostring(op))
