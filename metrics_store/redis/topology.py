"""Single Redis, Sentinel or Cluster: the one module where the three differ.

Every process (collector, sampler, API, job worker, `up`) asks its `Topology` what differs
and never branches on the kind of Redis itself: which clients to build, which shards hold data
and which takes the next batch, whether a MULTI spans a store call, where a read's calls go,
how the live update is published and subscribed to.

`METRICS_REDIS_CLUSTER=true` means REDIS_URL names a node of a Redis Cluster (the client finds
the others); `METRICS_REDIS_SENTINELS` set means ask those sentinels for the primary; otherwise
REDIS_URL is the Redis. Single and Sentinel differ only in how a client finds the primary.

    topology = topology_for(settings)
    client = topology.sync_client()
    shard = topology.shard_picker(client).next()      # the shard of the next batch
    groups = await topology.reads.groups(async_client, written)
    topology.channels.publish(pipe, channel, payload)
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Set
from typing import Any, ClassVar, Protocol

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from metrics_store.errors import MissingSetting
from metrics_store.redis import client as builders
from metrics_store.redis import cluster
from metrics_store.redis.fan_out import NodeGroup
from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import ReadPlan
from metrics_store.redis.scripts import READ, lua_script
from metrics_store.redis.shards import ShardPicker, shard_labels
from metrics_store.settings import Settings


class BatchShards(Protocol):
    """Which shard each new batch is written to."""

    def next(self) -> int: ...

    def homes(self) -> list[int]: ...


class Reads(ABC):
    """Where a read's calls go, and how a read recovers from a failed connection."""

    @abstractmethod
    async def groups(self, client: aioredis.Redis, written: Set[int]) -> list[NodeGroup]:
        """The node groups of one read: shards `written` are read, the others probed."""

    @abstractmethod
    async def run(self, client: aioredis.Redis, group: NodeGroup, plan: ReadPlan) -> list[Any]:
        """One group's reads as one script call on its node."""


class Channels(ABC):
    """Publishing and subscribing to the live update's channel."""

    @abstractmethod
    def publish(self, pipe: Any, channel: str, payload: bytes) -> None:
        """Queue the publication on a (sync or asyncio) pipeline."""

    @abstractmethod
    async def subscribe(self, client: aioredis.Redis, pubsub: PubSub, channel: str) -> None: ...

    @abstractmethod
    async def next_message(self, pubsub: PubSub, timeout_s: float) -> dict[str, Any] | None: ...


class Topology(ABC):
    """How the store's Redis is laid out, and every operation that differs with it."""

    name: ClassVar[str]
    # Whether a MULTI can hold what one store operation writes: not where its keys span slots.
    transactions: ClassVar[bool] = True
    # Whether a batch's control writes (availability, the node's beat) need a call of their
    # own: on a cluster they sit in another slot than the batch's shard.
    control_apart: ClassVar[bool] = False
    # Whether a script call may be sent and its reply read later on one held connection.
    pipelined_sends: ClassVar[bool] = True
    # Whether Redis is always given from outside (never a private redis-server of `up`).
    external: ClassVar[bool] = False
    # Whether the server a client writes to can change under it (a Sentinel failover): its
    # collectors keep their recent batches to write them again there (record/replay.py).
    primary_moves: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shards: list[Keys] = [Keys(settings.key_prefix)]  # the key sets data goes to
        self.reads: Reads = _OneServerReads(self.shards)
        self.channels: Channels = _PlainChannels()

    @abstractmethod
    def sync_client(self, *, command_timeout_s: float | None = None) -> redis.Redis:
        """A blocking client of the store's Redis (the flusher, the sampler, rq)."""

    @abstractmethod
    def async_client(self) -> aioredis.Redis:
        """An asyncio client with its own connection pool (the API)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store's Redis is, for logs and banners: never a password."""

    def jobs_client(self, *, command_timeout_s: float | None = None) -> redis.Redis:
        """The rq queues' Redis: METRICS_JOBS_REDIS_URL if set, else the store's own."""
        if self.settings.redis.jobs_url is None:
            return self.sync_client(command_timeout_s=command_timeout_s)
        return builders.single_client(
            self.settings, self.settings.redis.jobs_url, command_timeout_s=command_timeout_s
        )

    def shard_picker(self, client: redis.Redis) -> BatchShards:
        return _OneShard()

    def server_of(self, client: redis.Redis, key: str) -> redis.Redis:
        """The client of the one server holding `key` (WAIT must share the write's connection)."""
        return client

    def used_memory(self, client: redis.Redis) -> int:
        """How much memory the store's data takes in Redis (`redisCacheSize`)."""
        return builders.server_used_memory(client)

    def after_write_failure(self, client: redis.Redis) -> None:  # noqa: B027 (nothing to do)
        """After a failed write: let the next attempt find the right server."""

    def primary_address(self, client: redis.Redis) -> str | None:
        """The server that takes writes now, as those who decide name it ("host:port"); None
        where it never moves."""
        return None

    def after_primary_moved(self, client: redis.Redis) -> None:  # noqa: B027 (nothing to do)
        """The primary moved: no connection of `client` may still lead to the old one."""

    async def recover(self, client: aioredis.Redis) -> None:
        """After a connection failure of an asyncio client: the next attempt starts afresh.

        After a Redis restart every idle pooled connection is dead, and with no retries each
        would fail one command of its own before the pool replaced it: so they are dropped.
        Connections in use are left alone; their requests fail by themselves.
        """
        with contextlib.suppress(redis.RedisError, OSError):  # a dead socket closes anyway
            await client.connection_pool.disconnect(inuse_connections=False)


class SingleRedis(Topology):
    name = "single"

    def sync_client(self, *, command_timeout_s: float | None = None) -> redis.Redis:
        return builders.single_client(self.settings, command_timeout_s=command_timeout_s)

    def async_client(self) -> aioredis.Redis:
        return builders.single_async_client(self.settings)

    def describe(self) -> str:
        return builders.redacted_url(self.settings.redis.url)


class SentinelRedis(Topology):
    name = "sentinel"
    external = True
    primary_moves = True

    def sync_client(self, *, command_timeout_s: float | None = None) -> redis.Redis:
        return builders.sentinel_client(self.settings, command_timeout_s=command_timeout_s)

    def async_client(self) -> aioredis.Redis:
        return builders.sentinel_async_client(self.settings)

    def describe(self) -> str:
        return builders.describe_sentinels(self.settings)

    def primary_address(self, client: redis.Redis) -> str | None:
        # Asks the sentinels; on a change the pool also drops its idle connections.
        host, port = client.connection_pool.get_master_address()  # type: ignore[attr-defined]
        return f"{host}:{port}"

    def after_primary_moved(self, client: redis.Redis) -> None:
        # In use too: a connection held across the move (another thread's) still leads to the
        # old primary, which may take writes until the sentinels demote it.
        client.connection_pool.disconnect(inuse_connections=True)


class ClusterRedis(Topology):
    """Data keys spread over `shards` hash tags, control keys on one; reads per primary."""

    name = "cluster"
    transactions = False
    control_apart = True
    pipelined_sends = False
    external = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        prefix = settings.key_prefix
        self.shards = [Keys(prefix, label) for label in shard_labels(prefix, settings.redis.shards)]
        self.reads = _PerPrimaryReads(self.shards)
        self.channels = _ShardedChannels()

    def sync_client(self, *, command_timeout_s: float | None = None) -> redis.Redis:
        return builders.cluster_client(self.settings, command_timeout_s=command_timeout_s)

    def async_client(self) -> aioredis.Redis:
        return builders.cluster_async_client(self.settings)

    def describe(self) -> str:
        return f"cluster via {builders.redacted_url(self.settings.redis.url)}"

    def jobs_client(self, *, command_timeout_s: float | None = None) -> redis.Redis:
        # rq knows no Cluster: its queues need a plain Redis of their own. Refused here, at
        # start, rather than failing on the first job with a MOVED from whichever node.
        if self.settings.redis.jobs_url is None:
            raise MissingSetting(
                "rq needs METRICS_JOBS_REDIS_URL on a Redis Cluster (rq knows no Cluster): "
                "set it to a plain Redis for the job queues"
            )
        return super().jobs_client(command_timeout_s=command_timeout_s)

    def shard_picker(self, client: redis.Redis) -> BatchShards:
        return ShardPicker(self.shards, client)

    def server_of(self, client: redis.Redis, key: str) -> redis.Redis:
        return cluster.server_of(client, key)

    def used_memory(self, client: redis.Redis) -> int:
        return cluster.used_memory(client)

    def after_write_failure(self, client: redis.Redis) -> None:
        cluster.refresh_slots(client)

    async def recover(self, client: aioredis.Redis) -> None:
        # The client dropped the failed node's connections itself; a node failed or slots
        # moved, so the map is read anew.
        await cluster.read_slot_map(client, anew=True)


def topology_for(settings: Settings) -> Topology:
    """The topology the settings describe: the one place that asks which it is."""
    if settings.redis.cluster:
        return ClusterRedis(settings)
    return SentinelRedis(settings) if settings.redis.sentinels else SingleRedis(settings)


# --- the variants' parts ----------------------------------------------------------------------
class _OneShard:
    def next(self) -> int:
        return 0

    def homes(self) -> list[int]:
        return [0]


class _OneServerReads(Reads):
    """Every key in one slot of one server: the whole plan is one read.lua call."""

    def __init__(self, shards: list[Keys]) -> None:
        self._group = NodeGroup(None, tuple(range(len(shards))), control=True)

    async def groups(self, client: aioredis.Redis, written: Set[int]) -> list[NodeGroup]:
        return [self._group]

    async def run(self, client: aioredis.Redis, group: NodeGroup, plan: ReadPlan) -> list[Any]:
        return list(await lua_script(READ).run_async(client, plan.keys, plan.args))


class _PerPrimaryReads(Reads):
    """One read_on_node.lua call per primary, over the shards it serves that hold data."""

    def __init__(self, shards: list[Keys]) -> None:
        self._shards = shards

    async def groups(self, client: aioredis.Redis, written: Set[int]) -> list[NodeGroup]:
        await cluster.read_slot_map(client)
        return cluster.node_groups(client, self._shards, written)

    async def run(self, client: aioredis.Redis, group: NodeGroup, plan: ReadPlan) -> list[Any]:
        return await cluster.run_on_primary(client, group, plan)


class _PlainChannels(Channels):
    def publish(self, pipe: Any, channel: str, payload: bytes) -> None:
        pipe.publish(channel, payload)

    async def subscribe(self, client: aioredis.Redis, pubsub: PubSub, channel: str) -> None:
        await pubsub.subscribe(channel)

    async def next_message(self, pubsub: PubSub, timeout_s: float) -> dict[str, Any] | None:
        message: dict[str, Any] | None = await pubsub.get_message(
            ignore_subscribe_messages=True, timeout=timeout_s
        )
        return message


class _ShardedChannels(Channels):
    """SPUBLISH/SSUBSCRIBE: the channel lives on one slot, so publishing costs one node, not a
    broadcast over the cluster bus."""

    def publish(self, pipe: Any, channel: str, payload: bytes) -> None:
        pipe.spublish(channel, payload)

    async def subscribe(self, client: aioredis.Redis, pubsub: PubSub, channel: str) -> None:
        await cluster.ssubscribe(client, pubsub, channel)

    async def next_message(self, pubsub: PubSub, timeout_s: float) -> dict[str, Any] | None:
        return await cluster.next_sharded_message(pubsub, timeout_s)


# --- shorthands for the callers that need only a client -------------------------------------
def sync_client(
    settings: Settings, url: str | None = None, *, command_timeout_s: float | None = None
) -> redis.Redis:
    """A blocking client of the store's Redis; `url` names another, single server (a cache
    to measure)."""
    if url is not None:
        return builders.single_client(settings, url, command_timeout_s=command_timeout_s)
    return topology_for(settings).sync_client(command_timeout_s=command_timeout_s)


def async_client(settings: Settings) -> aioredis.Redis:
    """An asyncio client of the store's Redis with its own connection pool (the API)."""
    return topology_for(settings).async_client()


def jobs_client(settings: Settings, *, command_timeout_s: float | None = None) -> redis.Redis:
    """The rq queues' Redis: METRICS_JOBS_REDIS_URL if set, else the store's own."""
    return topology_for(settings).jobs_client(command_timeout_s=command_timeout_s)


def describe_redis(settings: Settings) -> str:
    """Where the store's Redis is, for logs and banners: never a password."""
    return topology_for(settings).describe()
