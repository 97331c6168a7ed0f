-- Sum every member's score over a set of bucket sorted sets, so a window's aggregate costs
-- one round trip and a few numbers on the wire, whatever the number of events.
--
-- KEYS[1..] = bucket sorted sets (missing ones count as empty)
-- Returns a flat array: member, total, member, total, ... (totals as strings, full precision)

local totals = {}
local order = {}
for k = 1, #KEYS do
  local flat = redis.call('ZRANGE', KEYS[k], 0, -1, 'WITHSCORES')
  for j = 1, #flat, 2 do
    local name = flat[j]
    local value = tonumber(flat[j + 1])
    if totals[name] == nil then
      totals[name] = value
      order[#order + 1] = name
    else
      totals[name] = totals[name] + value
    end
  end
end
local reply = {}
for _, name in ipairs(order) do
  reply[#reply + 1] = name
  reply[#reply + 1] = string.format('%.17g', totals[name])
end
return reply
