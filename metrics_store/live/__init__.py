"""The live keys: node snapshots, the live stream's keys, the replica registry, process health."""
