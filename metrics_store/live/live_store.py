"""The live stream's keys and the API replica registry: the one module that touches them.

    live = LiveStore(client, settings)
    if await live.claim_tick(tick, replica_id):        # {p}:live:tick:<second>
        await live.publish_update(payload)              # {p}:live:latest + {p}:live:updates
    payload = await live.latest_update()                # a client joining between ticks
    async with live.subscribe_updates() as updates:     # each replica's relay
        payload = await updates.next_update(timeout_s=1.0)
    await live.beat_replica(replica_id, connections=3)   # {p}:live:replicas,
    await live.forget_replicas(replica_id)               # {p}:live:connections

How the channel is published and subscribed to is the topology's (`Topology.channels`): on a
Redis Cluster a sharded channel on the control keys' slot.
The HTTP layer (api/live/) calls these and never spells a key. The reader stages the
registry's reads (`read_connections`, `read_replica_count`) into its one-call read plans.
The registry follows Redis's clock alone: a beat is stamped, and the long dead pruned, by
`TIME` inside beat_replica.lua; a read counts the replicas stamped within the TTL of `TIME`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import ReadPlan, Staged, pairs
from metrics_store.redis.scripts import BEAT_REPLICA, lua_script
from metrics_store.redis.topology import Channels, topology_for
from metrics_store.settings import Settings

# The lock is one key per second, not one key for all: the seconds of two replicas whose
# clocks disagree never collide, and a replica whose clock lags the winner's by less than
# this still finds the key and does not compute the same second twice. (A larger lag would
# publish a duplicate second, which every client's slot refuses as not newer.)
TICK_LOCK_TTL_MS = 5_000
# Every tick rewrites the latest update; if ticks stop (no replica can reach Redis), it
# disappears rather than greet new clients with stale numbers.
LATEST_TTL_MS = 10_000
# Long past node_ttl_s: a replica this stale is gone, not merely paused.
REPLICA_PRUNE_AFTER_S = 300.0


class UpdateSubscription:
    """A subscription to the updates channel; `async with` subscribes and always closes."""

    def __init__(self, client: aioredis.Redis, channel: str, channels: Channels) -> None:
        self._client = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._channel = channel
        self._channels = channels

    async def __aenter__(self) -> UpdateSubscription:
        try:
            await self._channels.subscribe(self._client, self._pubsub, self._channel)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def next_update(self, timeout_s: float) -> bytes | None:
        """The next published update, or None if none came within `timeout_s`."""
        message = await self._channels.next_message(self._pubsub, timeout_s)
        if message is None or message["type"] not in ("message", "smessage"):
            return None
        data: bytes = message["data"]
        return data

    async def close(self) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py


class LiveStore:
    """Tick lock, latest update, updates channel and replica registry of one store."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._keys = Keys(settings.key_prefix)
        # On a cluster the pipelines below are plain ones (`transactions` false): the commands
        # still go to one node, in order, on one connection, but other clients' commands may
        # run between them (redis-py's asyncio cluster client has no MULTI). Each is a pair of
        # writes whose interleaving a reader bears for a moment: a beat beside the previous
        # count, or an update published a moment before `latest` names it.
        self._topology = topology_for(settings)

    async def recover(self) -> None:
        """After a failed tick or beat: the next one starts on fresh connections."""
        await self._topology.recover(self._client)

    # --- the tick ----------------------------------------------------------------------------
    async def claim_tick(self, tick: int, replica_id: str) -> bool:
        """Take the lock of second `tick` for `replica_id`; False if another replica has it."""
        lock = self._keys.tick_lock(tick)
        return bool(await self._client.set(lock, replica_id, nx=True, px=TICK_LOCK_TTL_MS))

    async def publish_update(self, payload: bytes) -> None:
        """Store `payload` as the latest update and publish it to every replica's relay."""
        # MULTI: `latest` is always the update published last, never one behind or ahead
        # of the channel, so a client joining at any moment starts from what the relay sends.
        pipe = self._client.pipeline(transaction=self._topology.transactions)
        pipe.set(self._keys.latest_update, payload, px=LATEST_TTL_MS)
        self._topology.channels.publish(pipe, self._keys.updates_channel, payload)
        await pipe.execute()

    async def latest_update(self) -> bytes | None:
        """The update published last, or None once ticks have stopped for LATEST_TTL_MS."""
        payload = await self._client.get(self._keys.latest_update)
        return payload.encode() if isinstance(payload, str) else payload

    def subscribe_updates(self) -> UpdateSubscription:
        channels = self._topology.channels
        return UpdateSubscription(self._client, self._keys.updates_channel, channels)

    # --- the replica registry ------------------------------------------------------------------
    async def beat_replica(self, replica_id: str, connections: int) -> float:
        """Record that a replica is alive with `connections` clients; prune the long dead.

        Returns Redis's clock, the beat's stamp (one script call: atomic, one round trip)."""
        keys = [self._keys.replicas, self._keys.connections]
        args: list[str | float] = [replica_id, connections, REPLICA_PRUNE_AFTER_S]
        stamp = await lua_script(BEAT_REPLICA).run_async(self._client, keys, args)
        return float(stamp)

    async def forget_replicas(self, *replica_ids: str | bytes) -> None:
        """Take replicas out of the registry (a clean shutdown, or pruning the long dead)."""
        # A pruned replica that was only paused re-adds itself on its next beat; the race
        # costs it at most one second of not being counted.
        pipe = self._client.pipeline(transaction=self._topology.transactions)
        pipe.zrem(self._keys.replicas, *replica_ids)
        pipe.hdel(self._keys.connections, *replica_ids)
        await pipe.execute()


# --- the registry's reads, staged into the reader's one-call plans ------------------------------
def read_connections(plan: ReadPlan, keys: Keys, ttl_s: float) -> Staged[int]:
    """WebSocket clients held by the replicas that beat within `ttl_s` of Redis's clock."""
    plan.since(keys.replicas, ttl_s)
    plan.hgetall(keys.connections)

    def parse(replies: Sequence[Any]) -> int:
        live = set(replies[0])
        counts = pairs(replies[1])
        return sum(int(counts[replica]) for replica in live if replica in counts)

    return Staged(2, parse)


def read_replica_count(plan: ReadPlan, keys: Keys, ttl_s: float) -> Staged[int]:
    """How many replicas beat within `ttl_s` of Redis's clock."""
    plan.since(keys.replicas, ttl_s)
    return Staged(1, lambda replies: len(replies[0]))
