"""Reads over the store's shards: control reads once, data reads on every shard, then merged.

On one Redis the store has one shard whose keys share the control keys' slot: the whole plan
is one call of lua/read.lua, as ever. On Redis Cluster each shard's reads are one call on its
own slot, the control reads one more, all sent at once; the data replies are merged here:
summed counters (exact: every shard holds disjoint events) and the newest entries by stamp.
Cost: one call per shard with reads, each O(buckets); never O(events).

    plan = FanOutPlan(shards)
    plan.hgetall(keys.availability)                  # a control read, as on a ReadPlan
    plan.sum_shards([window_keys(s) for s in shards])  # ZUNION on each shard, sums merged
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from metrics_store.keys import Keys
from metrics_store.read_plan import Arg, Key, ReadPlan

# The replies of one data read, one per shard -> the reply as if one shard held everything.
Merge = Callable[[list[Any]], Any]
RunPlan = Callable[[ReadPlan], Awaitable[list[Any]]]


class FanOutPlan(ReadPlan):
    """A ReadPlan whose own reads hit the control keys, plus data reads run on every shard."""

    def __init__(self, shards: Sequence[Keys]) -> None:
        super().__init__()
        self.shards = list(shards)
        self.shard_plans = [ReadPlan() for _ in self.shards]
        self._order: list[tuple[int, Merge | None]] = []  # per read: its index, how to merge
        self._control_reads = self._shard_reads = 0

    # --- data reads: the same read on each shard's keys (one list of keys per shard) ---------
    def sum_shards(self, keys: Sequence[Sequence[Key]]) -> None:
        """ZUNION of each shard's keys; every member's score summed over the shards too."""
        for plan, shard_keys in zip(self.shard_plans, keys, strict=True):
            plan.zunion(shard_keys)
        self._shard_read(merge_sums)

    def totals_shards(self, keys: Sequence[Sequence[Key]], members: Sequence[Arg]) -> None:
        """TOTALS on each shard's keys (the same number on each), added key by key."""
        for plan, shard_keys in zip(self.shard_plans, keys, strict=True):
            plan.totals(shard_keys, members)
        self._shard_read(merge_totals)

    def hsum_shards(self, keys: Sequence[Sequence[Key]]) -> None:
        """HSUM of each shard's hashes (histograms); every field's value added over the shards."""
        for plan, shard_keys in zip(self.shard_plans, keys, strict=True):
            plan.hsum(shard_keys)
        self._shard_read(merge_hashes)

    def hgetall_shards(self, keys: Sequence[Key]) -> None:
        """HGETALL of one hash per shard (an all-time histogram), fields added over the shards."""
        for plan, key in zip(self.shard_plans, keys, strict=True):
            plan.hgetall(key)
        self._shard_read(merge_hashes)

    def newest_shards(self, keys: Sequence[Key], count: int) -> None:
        """The newest `count` entries of each shard's list (newest first), merged by stamp."""
        for plan, key in zip(self.shard_plans, keys, strict=True):
            plan.lrange(key, 0, count - 1)
        self._shard_read(lambda replies: merge_newest(replies, count))

    def _shard_read(self, merge: Merge) -> None:
        self._order.append((self._shard_reads, merge))
        self._shard_reads += 1

    def _add(self, name: str, keys: Sequence[Key], args: Sequence[Arg]) -> None:
        super()._add(name, keys, args)
        self._order.append((self._control_reads, None))
        self._control_reads += 1

    # --- running it ------------------------------------------------------------------------
    async def run(self, run_plan: RunPlan) -> list[Any]:
        """The replies of every read, in the order staged; `run_plan` runs one script call."""
        if len(self.shards) == 1 and self.shards[0].root == self.shards[0].control_root:
            return await self._run_as_one(run_plan)
        plans = [plan for plan in (self, *self.shard_plans) if plan.keys]
        replies = iter(await asyncio.gather(*(run_plan(self._own(plan)) for plan in plans)))
        control = next(replies) if self.keys else []
        shards = [next(replies) if plan.keys else [] for plan in self.shard_plans]
        return self._merged(control, shards)

    async def _run_as_one(self, run_plan: RunPlan) -> list[Any]:
        """One slot holds everything: control and data reads in a single call."""
        combined = ReadPlan()
        combined.keys = [*self.keys, *self.shard_plans[0].keys]
        combined.args = [*self.args, *self.shard_plans[0].args]
        replies = await run_plan(combined)
        control, data = replies[: self._control_reads], replies[self._control_reads :]
        return self._merged(control, [data])

    def _own(self, plan: ReadPlan) -> ReadPlan:
        """`plan` as a plain ReadPlan (this plan's own reads are its control reads)."""
        if plan is not self:
            return plan
        control = ReadPlan()
        control.keys, control.args = self.keys, self.args
        return control

    def _merged(self, control: Sequence[Any], shards: Sequence[Sequence[Any]]) -> list[Any]:
        out = []
        for index, merge in self._order:
            if merge is None:
                out.append(control[index])
            elif len(shards) == 1:
                out.append(shards[0][index])  # one shard: its reply as it is
            else:
                out.append(merge([replies[index] for replies in shards]))
        return out


def merge_sums(replies: list[Sequence[bytes]]) -> list[bytes | float]:
    """ZUNION ... WITHSCORES replies [member, score, ...] of several shards, summed."""
    totals: dict[bytes, float] = {}
    for flat in replies:
        for i in range(0, len(flat), 2):
            totals[flat[i]] = totals.get(flat[i], 0.0) + float(flat[i + 1])
    return [item for pair in totals.items() for item in pair]


def merge_totals(replies: list[Sequence[bytes]]) -> list[float]:
    """TOTALS replies of several shards (one per key, the same keys), added key by key."""
    return [sum(float(value) for value in column) for column in zip(*replies, strict=True)]


def merge_hashes(replies: list[Sequence[bytes]]) -> list[bytes]:
    """HSUM or HGETALL replies [field, value, ...] of several shards, each field's values added.

    Integer values (histogram bin counts) stay integers, so the merged bins are exact and read
    like one shard's; a field holding a fraction anywhere (a histogram's "sum") adds as floats.
    """
    counts: dict[bytes, int] = {}
    fractions: dict[bytes, float] = {}
    for flat in replies:
        for i in range(0, len(flat), 2):
            field, value = flat[i], flat[i + 1]
            try:
                counts[field] = counts.get(field, 0) + int(value)
            except ValueError:
                fractions[field] = fractions.get(field, 0.0) + float(value)
    out: list[bytes] = []
    for field in {**counts, **fractions}:
        if field in fractions:
            total = fractions[field] + counts.get(field, 0)
            out += (field, repr(total).encode())
        else:
            out += (field, str(counts[field]).encode())
    return out


def merge_newest(replies: list[Sequence[bytes]], count: int) -> list[bytes]:
    """The newest `count` entries of several newest-first lists, by each entry's last field,
    its stamp (entries written before stamps were kept count as oldest)."""
    entries = [entry for reply in replies for entry in reply]
    entries.sort(key=_stamp, reverse=True)  # stable: one shard's ties keep their order
    return entries[:count]


def _stamp(entry: bytes) -> float:
    fields = entry.split()
    return float(fields[3]) if len(fields) > 3 else 0.0
