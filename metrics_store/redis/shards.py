"""The hash tags a Redis Cluster store's data keys spread over, and which shard a collector's
next batch goes to. (A single Redis, through Sentinel or not, has one shard: `topology.py`.)

A Redis Cluster splits its 16384 slots into equal ranges, one per primary. Each shard's tag is
chosen (by a salt, found once per process) so that its slot falls in the shard's own 1/N of
the slot space: with N shards written round-robin, every primary holds N/P (rounded) shards
whatever P is, so 16 shards feed 3 to 16 primaries, and 3 primaries hold 6, 5 and 5.
The search costs a few thousand CRC16s, once per process.
Random tags would leave some primary with twice another's share, or none.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from typing import cast

import redis
from redis.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisClusterException

from metrics_store.redis.keys import Keys


@cache
def shard_labels(prefix: str, count: int) -> tuple[str, ...]:
    """`count` labels "<index>-<salt>"; shard i's tag {prefix:label} hashes into the i-th
    1/count of the slots."""
    return tuple(_label(prefix, index, count) for index in range(count))


def _label(prefix: str, index: int, count: int) -> str:
    # Near the middle of the shard's range, so that when P primaries split the slots in P
    # equal ranges, each takes the shards whose middles it holds: N/P of them, rounded.
    width = REDIS_CLUSTER_HASH_SLOTS / count
    middle = (index + 0.5) * width
    tolerance = max(1.0, min(32.0, width / 4))
    salt = 0
    while True:  # about 2 * tolerance / 16384 odds per salt: a few hundred tries at most
        label = f"{index}-{salt}"
        if abs(tag_slot(prefix, label) - middle) <= tolerance:
            return label
        salt += 1


def tag_slot(prefix: str, label: str) -> int:
    """The cluster slot of every key of the shard `label`."""
    return key_slot(Keys(prefix, label).root.encode())


class ShardPicker:
    """The shard of each new batch: each primary's home shard, the primaries in turn.

    A primary's home shard is the lowest-numbered shard it serves, the same for every
    collector, so a primary's writes all go to one shard and its other shards stay empty:
    a read then sums P shards of data, not `shards`, and a window's buckets take P times
    the memory of one Redis's rather than `shards` times. Taking the primaries in turn gives
    each the same number of batches (taking the shards in turn would give each primary writes
    in proportion to the shards it serves: 6/5/5 for 16 shards on 3 primaries, 1.2 at best).
    The other shards are there for the cluster's other shapes: with more primaries, or after
    slots move, their shards become homes. The cluster client keeps the slot map current
    across failovers; a shard whose slot has no primary for a moment is passed over (writing
    every shard in turn then would leave data, and so reads, on all of them for good). The
    start is random, so collectors do not move in step.
    """

    def __init__(self, shards: Sequence[Keys], client: redis.Redis) -> None:
        self._roots = [shard.root for shard in shards]
        self._client = cast(RedisCluster, client)
        self._turn = random.randrange(len(self._roots))

    def next(self) -> int:
        """The index of the shard the next batch is written to."""
        self._turn += 1
        homes = self.homes()
        return homes[self._turn % len(homes)]

    def homes(self) -> list[int]:
        """Each primary's home shard."""
        home: dict[str, int] = {}
        for index, root in enumerate(self._roots):
            try:
                name = self._client.get_node_from_key(root).name  # type: ignore[no-untyped-call]
            except RedisClusterException:  # its slot has no primary now: mid-failover
                continue
            home.setdefault(name, index)
        return sorted(home.values()) or [0]  # no slot served at all: writes fail and retry
