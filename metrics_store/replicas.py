"""The API replica registry: which replicas are alive and how many WebSocket clients each holds.

Each replica beats once a second: one MULTI pipeline writes its epoch seconds into
`{p}:live:replicas` and its client count into `{p}:live:connections`. Readers count only the
replicas whose beat is younger than `node_ttl_s`, so a killed replica's clients stop counting
within that time without anyone cleaning up after it. A clean shutdown removes the replica at
once. Entries of replicas dead for `PRUNE_AFTER_S` are deleted by whichever replica beats next,
so the registry stays small however many replicas come and go.
"""

from __future__ import annotations

import os
import secrets

import redis.asyncio as aioredis

from metrics_store.clock import Clock, SystemClock
from metrics_store.keys import Keys
from metrics_store.settings import Settings

# Long past node_ttl_s: a replica this stale is gone, not merely paused.
PRUNE_AFTER_S = 300.0


def new_replica_id(node: str) -> str:
    """A replica id unique across restarts: node, process id, and a random suffix."""
    return f"{node}:{os.getpid()}:{secrets.token_hex(3)}"


def replica_pid(replica_id: str) -> int:
    """The process id inside a replica id (for operators and tests)."""
    return int(replica_id.split(":")[-2])


class ReplicaRegistry:
    """One replica's entry in the registry.

    >>> registry = ReplicaRegistry(client, settings, new_replica_id(settings.node))
    >>> await registry.beat(connections=3)   # every second
    >>> await registry.remove()              # on clean shutdown
    """

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        replica_id: str,
        clock: Clock | None = None,
    ) -> None:
        self.replica_id = replica_id
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._clock = clock or SystemClock()

    async def beat(self, connections: int) -> None:
        """Record that this replica is alive with `connections` clients; prune the long dead."""
        now_s = self._clock.now()
        # MULTI: a reader never sees the new beat with the old count, or the reverse.
        pipe = self._client.pipeline(transaction=True)
        pipe.zadd(self._keys.replicas, {self.replica_id: now_s})
        pipe.hset(self._keys.connections, self.replica_id, connections)
        pipe.zrangebyscore(self._keys.replicas, "-inf", now_s - PRUNE_AFTER_S)
        *_, dead = await pipe.execute()
        if dead:
            await self._forget(dead)

    async def remove(self) -> None:
        """Take this replica out of the registry (clean shutdown)."""
        await self._forget([self.replica_id])

    async def _forget(self, replica_ids: list[bytes] | list[str]) -> None:
        # A pruned replica that was only paused re-adds itself on its next beat; the race
        # costs it at most one second of not being counted.
        pipe = self._client.pipeline(transaction=True)
        pipe.zrem(self._keys.replicas, *replica_ids)
        pipe.hdel(self._keys.connections, *replica_ids)
        await pipe.execute()
