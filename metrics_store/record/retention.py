"""Retire buckets: delete those whose retention period has passed.

Each bucket is entered in the bucket index with the second it retires. Collectors prune the
index now and then by Redis's clock, the one every writer shares, so a node whose clock runs
hours fast cannot delete the buckets the others are still writing. A store that trusts its
writers' clocks (clock_skew_tolerance_s = 0: replays, simulated time) prunes by theirs. Each
bucket's EXPIRE remains the backstop.
"""

from __future__ import annotations

import redis

from metrics_store.redis.client import redis_now
from metrics_store.redis.keys import Keys

PRUNE_BATCH = 500


def prune_retired_buckets(
    client: redis.Redis, keys: Keys, now_s: float | None = None, *, transaction: bool = True
) -> int:
    """Delete the buckets retired by `now_s` (None: Redis's clock); returns how many went.

    Safe to run concurrently. `transaction`: whether the topology has MULTI (a shard's keys
    share one slot, but redis-py's cluster pipelines are plain ones).
    """
    if now_s is None:
        now_s = redis_now(client)
    removed = 0
    while True:
        retired = client.zrangebyscore(keys.bucket_index, "-inf", now_s, start=0, num=PRUNE_BATCH)
        if not retired:
            return removed
        pipe = client.pipeline(transaction=transaction)
        pipe.delete(*retired)
        pipe.zrem(keys.bucket_index, *retired)
        pipe.execute()
        removed += len(retired)
