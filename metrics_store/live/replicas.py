"""The API replica registry: which replicas are alive and how many WebSocket clients each holds.

Each replica beats once a second: one script call stamps it in `{p}:live:replicas` by Redis's
clock (never the replica's own: one running a minute fast would count for a minute after it
died) and writes its client count into `{p}:live:connections` (both owned by
`metrics_store/live/live_store.py`). Readers count only the replicas whose beat is younger than
`node_ttl_s` by Redis's clock, so a killed replica's clients stop counting within that time
without anyone cleaning up after it. A clean shutdown removes the replica at once. Entries of
replicas dead for `REPLICA_PRUNE_AFTER_S` are deleted by whichever replica beats next, so the
registry stays small however many replicas come and go.
"""

from __future__ import annotations

import os
import secrets

import redis.asyncio as aioredis

from metrics_store.live.live_store import LiveStore
from metrics_store.settings import Settings


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
    ) -> None:
        self.replica_id = replica_id
        self._store = LiveStore(client, settings)

    async def beat(self, connections: int) -> float:
        """Record that this replica is alive with `connections` clients; prune the long dead.

        Returns Redis's clock, the beat's stamp."""
        return await self._store.beat_replica(self.replica_id, connections)

    async def remove(self) -> None:
        """Take this replica out of the registry (clean shutdown)."""
        await self._store.forget_replicas(self.replica_id)
