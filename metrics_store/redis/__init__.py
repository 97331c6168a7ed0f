"""Speaking to Redis: clients, the topology, key names, shards, Lua scripts and read plans."""
