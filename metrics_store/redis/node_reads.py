"""Where a read's calls go: the one Redis, or each primary of a Redis Cluster.

On a single Redis (or through Sentinel) the store's keys share one slot: a read is one call of
lua/read.lua. On a cluster, the shards are grouped by the primary that serves their slot, and
each primary gets one call of lua/read_on_node.lua that reads all of its shards that hold
data: P calls for P primaries, whatever `METRICS_SHARDS` is, and the primary adds its shards
up itself. Collectors write one home shard per primary (`shards.ShardPicker`), so the other
shards are only probed (fan_out.py): sending their keys would cost the client more than any
other part of a read.

A call can find the slot map stale (a failover, a slot moved): Redis refuses a key the node
no longer serves. `StaleSlotMap` says so; the reader re-reads the map and tries once more.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import (
    ClusterError,
    RedisClusterException,
    ResponseError,
)

from metrics_store.redis.client import SLOT_MOVES, StaleSlotMap, discover_cluster
from metrics_store.redis.fan_out import NodeGroup
from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import ReadPlan
from metrics_store.redis.scripts import READ, READ_ON_NODE, lua_script


def node_groups(
    client: aioredis.Redis, shards: Sequence[Keys], written: Set[int]
) -> list[NodeGroup]:
    """The shards (indices) by the node that serves them, split into those `written` (read)
    and the others (probed); the control keys' node is marked.

    The cluster client must have read its slot map (`redis_client.discover_cluster`)."""
    if not isinstance(client, AsyncRedisCluster):
        return [NodeGroup(None, tuple(range(len(shards))), control=True)]
    by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
    for index, shard in enumerate(shards):
        node = _primary(client, shard.root)
        by_node.setdefault(node.name, (node, []))[1].append(index)
    control = _primary(client, shards[0].control_root)
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


async def run_group(client: aioredis.Redis, group: NodeGroup, plan: ReadPlan) -> list[Any]:
    """One group's reads as one script call on its node."""
    if group.node is None:
        return list(await lua_script(READ).run_async(client, plan.keys, plan.args))
    assert isinstance(client, AsyncRedisCluster)
    args = [len(plan.keys), *plan.keys, *plan.args]
    try:
        replies = await lua_script(READ_ON_NODE).run_on_node(client, group.node, args)
    except (*SLOT_MOVES, ClusterError, RedisClusterException) as exc:
        raise StaleSlotMap(f"{group.node.name}: {exc}") from exc  # MOVED, CLUSTERDOWN...
    except ResponseError as exc:
        if not any(cause in str(exc) for cause in _SLOT_REFUSALS):
            raise  # a bug, not an outage
        raise StaleSlotMap(f"{group.node.name}: {exc}") from exc
    return list(replies)


# How a node refuses a script's key it does not serve now: its slots moved away, the cluster
# is down (a failover under way), or the slot has no node (Redis 7.2+).
_SLOT_REFUSALS = ("non local key", "cluster is down", "slot not served")


async def read_slot_map(client: aioredis.Redis, *, anew: bool = False) -> None:
    """Make sure the cluster client has the slot map; `anew`: read it again (after
    `StaleSlotMap` or a failed node). No node answering is an outage (`StaleSlotMap`)."""
    if not isinstance(client, AsyncRedisCluster):
        return
    try:
        if anew:
            await client.nodes_manager.initialize()
        else:
            await discover_cluster(client)
    except RedisClusterException as exc:  # "Redis Cluster cannot be connected..."
        raise StaleSlotMap(str(exc)) from exc
