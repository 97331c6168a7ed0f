-- For each bucket, the sum of the named members' scores: one chart point per bucket.
--
-- KEYS[1..] = bucket sorted sets (missing ones count as empty)
-- ARGV[1..] = members to add up in each bucket
-- Returns one total per key, in order, as strings.

local reply = {}
for k = 1, #KEYS do
  local total = 0
  local scores = redis.call('ZMSCORE', KEYS[k], unpack(ARGV))
  for _, score in ipairs(scores) do
    if score then
      total = total + tonumber(score)
    end
  end
  reply[k] = string.format('%.17g', total)
end
return reply
