"""Fold the histogram bins waiting in a shard's change feed into the histogram hashes
(fold.lua, run by fold_now.lua).

The ingest script folds as batches come (every FOLD_ENTRIES entries, or once the oldest
waited FOLD_AGE_MS); a collector's upkeep folds too, each beat, what waited that long on the
shards it wrote, until nothing waits there, so the hashes catch up when writes stop. Readers
never need a fold: they add what waits.
"""

from __future__ import annotations

from typing import NamedTuple

import redis

from metrics_store.record.batch import FOLD_AGE_MS, FOLD_WRITES
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import FOLD_NOW, lua_script


class Folded(NamedTuple):
    folded: int  # the entries this call folded
    waiting: int  # the entries still waiting: too young for `min_age_ms`


def fold_waiting(client: redis.Redis, keys: Keys, min_age_ms: int = FOLD_AGE_MS) -> Folded:
    """Fold the shard's waiting entries if the oldest has waited `min_age_ms` (0: whatever
    waits): the oldest of them, up to about FOLD_WRITES hash fields."""
    folded, waiting = lua_script(FOLD_NOW).run(
        client, [keys.change_feed, keys.fold_state, keys.bucket_index], [min_age_ms, FOLD_WRITES]
    )
    return Folded(int(folded), int(waiting))
