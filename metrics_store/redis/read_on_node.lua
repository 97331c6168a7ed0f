#!lua flags=no-writes,allow-cross-slot-keys
-- read.lua for one node of a Redis Cluster: it reads the keys of every shard the node serves
-- in one call. Redis checks that a call's declared keys share one slot, so the keys come in
-- ARGV instead and are declared none; the flag lets the script touch keys of several slots,
-- all of them served here (else Redis refuses the call: "non local key").
--
-- ARGV = <n>, n keys, then read.lua's ARGV. (scripts.py puts read.lua's text after this.)
local KEYS, ARGV = (function(argv)
  local keys, args, n = {}, {}, tonumber(argv[1])
  for j = 1, n do
    keys[j] = argv[j + 1]
  end
  for j = n + 2, #argv do
    args[#args + 1] = argv[j]
  end
  return keys, args
end)(ARGV)
