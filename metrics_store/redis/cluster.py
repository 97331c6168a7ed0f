"""What only a Redis Cluster needs: reads per primary, one node's server, the slot map, sharded
pub/sub. `metrics_store.redis.topology` calls these for its cluster variant; nothing else does.

Reads: the shards are grouped by the primary that serves their slot, and each primary gets one
call of read_on_node.lua that reads all of its shards that hold data: P calls for P primaries,
whatever `METRICS_SHARDS` is, and the primary adds its shards up itself. Collectors write one
home shard per primary (`shards.ShardPicker`), so the other shards are only probed (fan_out.py):
sending their keys would cost the client more than any other part of a read.

A call can find the slot map stale (a failover, a slot moved): Redis refuses a key the node
no longer serves. `StaleSlotMap` says so; the reader re-reads the map and tries once more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence, Set
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterException, ResponseError

from metrics_store.redis.client import SLOT_MOVES, StaleSlotMap
from metrics_store.redis.fan_out import NodeGroup
from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import ReadPlan
from metrics_store.redis.scripts import READ_ON_NODE, lua_script

if TYPE_CHECKING:  # only for the casts: older redis-py has no asyncio ClusterPubSub to import
    from redis.asyncio.cluster import ClusterPubSub

# How a node refuses a script's key it does not serve now: its slots moved away, the cluster
# is down (a failover under way), or the slot has no node (Redis 7.2+).
_SLOT_REFUSALS = ("non local key", "cluster is down", "slot not served")
# How a call to a node fails while the cluster reshapes: MOVED, CLUSTERDOWN, no node for a slot.
_NODE_FAILURES: tuple[type[Exception], ...] = (*SLOT_MOVES, ClusterError, RedisClusterException)


# --- reads ---------------------------------------------------------------------------------
def node_groups(
    client: aioredis.Redis, shards: Sequence[Keys], written: Set[int]
) -> list[NodeGroup]:
    """The shards (indices) by the primary that serves them, split into those `written` (read)
    and the others (probed); the control keys' primary is marked. Needs the slot map."""
    cluster = cast(AsyncRedisCluster, client)
    by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
    for index, shard in enumerate(shards):
        node = _primary(cluster, shard.root)
        by_node.setdefault(node.name, (node, []))[1].append(index)
    control = _primary(cluster, shards[0].control_root)
    by_node.setdefault(control.name, (control, []))
    return [
        NodeGroup(
            node,
            tuple(i for i in indices if i in written),
            control=name == control.name,
            unwritten=tuple(i for i in indices if i not in written),
        )
        for name, (node, indices) in by_node.items()
    ]


def _primary(client: AsyncRedisCluster, key: str) -> ClusterNode:
    try:
        node = client.get_node_from_key(key)
    except RedisClusterException as exc:  # SlotNotCoveredError: the cluster is reshaping
        raise StaleSlotMap(str(exc)) from exc
    if node is None:
        raise StaleSlotMap(f"no node serves {key}")
    return node


async def run_on_primary(client: aioredis.Redis, group: NodeGroup, plan: ReadPlan) -> list[Any]:
    """One primary's reads as one read_on_node.lua call (its keys in ARGV: several slots)."""
    cluster = cast(AsyncRedisCluster, client)
    args = [len(plan.keys), *plan.keys, *plan.args]
    try:
        replies = await lua_script(READ_ON_NODE).run_on_node(cluster, group.node, args)
    except _NODE_FAILURES as exc:
        raise StaleSlotMap(f"{group.node.name}: {exc}") from exc  # MOVED, CLUSTERDOWN...
    except ResponseError as exc:
        if not any(cause in str(exc) for cause in _SLOT_REFUSALS):
            raise  # a bug, not an outage
        raise StaleSlotMap(f"{group.node.name}: {exc}") from exc
    return list(replies)


async def read_slot_map(client: aioredis.Redis, *, anew: bool = False) -> None:
    """Make sure the client has the slot map; `anew`: read it again (after `StaleSlotMap` or a
    failed node). No node answering is an outage (`StaleSlotMap`).

    redis-py reads the map on the first command; several first commands sent together fail
    ("Connection closed by server"), and a sharded subscription finds its node from the map
    without sending a command first (SlotNotCoveredError): so it is read here, up front.
    """
    cluster = cast(AsyncRedisCluster, client)
    try:
        if anew:
            await cluster.nodes_manager.initialize()
        else:
            await cluster.initialize()  # a no-op once initialised
    except RedisClusterException as exc:  # "Redis Cluster cannot be connected..."
        raise StaleSlotMap(str(exc)) from exc


# --- writes ----------------------------------------------------------------------------------
def server_of(client: redis.Redis, key: str) -> redis.Redis:
    """The client of the primary for `key`'s slot: for commands that must share the
    connection of a write (WAIT counts the replicas that hold what this connection wrote)."""
    cluster = cast(RedisCluster, client)
    node = cluster.get_node_from_key(key, replica=False)  # type: ignore[no-untyped-call]
    return cluster.get_redis_connection(node)


def used_memory(client: redis.Redis) -> int:
    """The memory the data takes cluster-wide: `used_memory` summed over the primaries (each
    replica holds a copy of its primary's)."""
    replies = cast(RedisCluster, client).info("memory", target_nodes=RedisCluster.PRIMARIES)
    if "used_memory" in replies:  # one primary: its reply as it is, not by node
        return int(replies["used_memory"])
    return sum(int(info["used_memory"]) for info in replies.values())


def refresh_slots(client: redis.Redis) -> None:
    """After a failure on a node reached by `server_of`: read the slot map anew."""
    # The next attempt tries again; a cluster with no node reachable raises its own exception.
    with contextlib.suppress(redis.RedisError, OSError, RedisClusterException):
        cast(RedisCluster, client).nodes_manager.initialize()


# --- sharded pub/sub: the channel lives on one slot, so publishing costs one node -------------
async def ssubscribe(client: aioredis.Redis, pubsub: PubSub, channel: str) -> None:
    await read_slot_map(client)  # on the node that serves the channel's slot
    await cast("ClusterPubSub", pubsub).ssubscribe(channel)


async def next_sharded_message(pubsub: PubSub, timeout_s: float) -> dict[str, Any] | None:
    sharded = cast("ClusterPubSub", pubsub)
    message: dict[str, Any] | None = await sharded.get_sharded_message(
        ignore_subscribe_messages=True, timeout=timeout_s
    )
    return message
