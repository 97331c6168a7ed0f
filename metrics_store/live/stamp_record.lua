-- Store one process's JSON record in a hash, stamped "at" by Redis's clock (TIME), and with
-- KEYS[2] the node's heartbeat by the same stamp: a writer whose clock is off can neither
-- look alive after it stops nor hide behind a stale stamp while it runs.
--
-- KEYS[1] = the records (hash)        KEYS[2] = live nodes (sorted set), optional
-- ARGV[1] = the record's field        ARGV[2] = the record: a JSON object without "at"
-- ARGV[3] = node name (with KEYS[2])
-- Returns Redis's clock as a string (epoch s): the record's "at".

local time = redis.call('TIME')
local stamp = string.format('%.6f', tonumber(time[1]) + tonumber(time[2]) / 1000000)
if string.sub(ARGV[2], -1) ~= '}' then
  return redis.error_reply('stamp_record.lua: the record is not a JSON object')
end
redis.call('HSET', KEYS[1], ARGV[1], string.sub(ARGV[2], 1, -2) .. ',"at":' .. stamp .. '}')
if KEYS[2] then
  redis.call('ZADD', KEYS[2], stamp, ARGV[3])
end
return stamp
