"""Which hash tags a store's data keys spread over: one in single Redis, `shards` in Cluster.

A Redis Cluster splits its 16384 slots into equal ranges, one per primary. Each shard's tag is
chosen (by a salt, found once per process) so that its slot falls in the shard's own 1/N of
the slot space: with N shards written round-robin, every primary holds N/P (rounded) shards
whatever P is, so 16 shards feed 3 to 16 primaries, and 3 primaries hold 6, 5 and 5.
The search costs a few thousand CRC16s, once per process.
Random tags would leave some primary with twice another's share, or none.
"""

from __future__ import annotations

from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from metrics_store.keys import Keys
from metrics_store.settings import Settings


def store_shards(settings: Settings) -> list[Keys]:
    """The key sets the data is written to and read from (control keys: `Keys(prefix)`)."""
    if not settings.redis_cluster:
        return [Keys(settings.key_prefix)]  # today's key names: one tag, one slot
    return [
        Keys(settings.key_prefix, label)
        for label in shard_labels(settings.key_prefix, settings.shards)
    ]


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
