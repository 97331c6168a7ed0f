"""Retire buckets by the store's clock: delete those whose retention period has passed.

Each bucket is entered in the bucket index with the second it retires. Collectors prune the
index now and then, so retention follows the clock the events carry (a test's moved clock
included) rather than Redis's own; each bucket's EXPIRE remains the backstop.
"""

from __future__ import annotations

import redis

from metrics_store.keys import Keys

PRUNE_BATCH = 500


def prune_retired_buckets(client: redis.Redis, keys: Keys, now_s: float) -> int:
    """Delete the buckets retired by `now_s`; returns how many went. Safe to run concurrently."""
    removed = 0
    while True:
        retired = client.zrangebyscore(keys.bucket_index, "-inf", now_s, start=0, num=PRUNE_BATCH)
        if not retired:
            return removed
        pipe = client.pipeline(transaction=True)
        pipe.delete(*retired)
        pipe.zrem(keys.bucket_index, *retired)
        pipe.execute()
        removed += len(retired)
