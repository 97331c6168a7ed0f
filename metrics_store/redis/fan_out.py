"""Reads over the store's shards: control reads once, data reads on every shard, then merged.

The reads run as one call of lua/read.lua per node group: on one Redis, one group holds the
only shard and the control keys, so the whole plan is one call as ever. On Redis Cluster each
primary gets one call for the shards it serves that hold data. The bucket reads (a window's
counters, a histogram's bins, a chart's totals) are answered from the reader's copy of the
buckets, which that same call brings up to date (redis/cached_reads.py); the recent lists of
the shards are merged here, newest entries by stamp.

A shard never written is not read: the call only asks whether it now holds data (its totals
key, which never expires, exists). If one does, the caller reads again with it.

    plan = FanOutPlan(shards, cache)
    plan.hgetall(keys.availability)                  # a control read, as on a ReadPlan
    plan.sum_shards(lambda i: window_keys(shards[i]))  # one sum over every shard's keys
    replies, newly_written = await plan.run(run_group, groups)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from metrics_store.redis.bucket_cache import BucketCache
from metrics_store.redis.cached_reads import CachedReads, CacheRun, evaluate_sum, evaluate_totals
from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import Arg, Key, ReadPlan

# A data read's keys on shard i, built only for the shards it reads (those holding data).
ShardKeys = Callable[[int], Sequence[Key]]
ShardKey = Callable[[int], Key]
# Partial replies of one data read (one per node, or per shard) -> the reply of the whole store.
Merge = Callable[[list[Any]], Any]
# Stages one data read on a node's plan, for the shards (indices) that node serves; returns
# how many replies it will give.
StageOnNode = Callable[[ReadPlan, Sequence[int]], int]


@dataclass(frozen=True)
class NodeGroup:
    """The shards one Redis node serves, and whether it also holds the control keys.

    `node` is whatever the caller's `run_group` sends to (None on a single Redis); `shards`
    are read, `unwritten` (shards that held no data when last seen) only probed."""

    node: Any
    shards: tuple[int, ...]
    control: bool
    unwritten: tuple[int, ...] = ()


RunGroup = Callable[[NodeGroup, ReadPlan], Awaitable[list[Any]]]


@dataclass(frozen=True)
class _DataRead:
    stage: StageOnNode
    merge: Merge
    empty: Any  # the reply when no shard holds data


class _Gathered:
    """The replies of a plan's calls, sorted by read as they come in."""

    def __init__(self, data: list[_DataRead], cached: CacheRun) -> None:
        self.control: Sequence[Any] = []
        self.partial: list[list[Any]] = [[] for _ in data]  # per data read, every node's part
        self.written: list[int] = []
        self.cached = cached


class FanOutPlan(ReadPlan):
    """A ReadPlan whose own reads hit the control keys, plus data reads over every shard."""

    def __init__(self, shards: Sequence[Keys], cache: BucketCache) -> None:
        super().__init__()
        self.shards = list(shards)
        self._data: list[_DataRead] = []
        # Reads of bucket keys, answered from the reader's copy (redis/cached_reads.py).
        self._cached = CachedReads(shards, cache)
        # per read: "control", "data" (read on each shard, merged) or "cached", and its index
        self._order: list[tuple[str, int]] = []
        self._control_reads = 0

    # --- data reads: one read over each shard's keys (one list of keys per shard) -----------
    def sum_shards(self, keys: ShardKeys) -> None:
        """Every member's score summed over all the shards' keys: flat [member, total, ...]."""
        self._cached_read(keys, evaluate_sum, empty=[])

    def totals_shards(self, keys: ShardKeys, count: int, members: Sequence[Arg]) -> None:
        """For each of the `count` keys (the same on each shard), its `members`' scores summed
        over the shards."""
        names = [n if isinstance(n, bytes) else str(n).encode() for n in members]
        self._cached_read(keys, partial(evaluate_totals, names), empty=[0.0] * count)

    def hsum_shards(self, keys: ShardKeys) -> None:
        """Every field's value summed over all the shards' hashes (histograms)."""
        self._cached_read(keys, evaluate_sum, empty=[])

    def hgetall_shards(self, keys: ShardKey) -> None:
        """One hash per shard (an all-time histogram), fields added over the shards."""
        self._cached_read(lambda i: [keys(i)], evaluate_sum, empty=[])

    def newest_shards(self, keys: ShardKey, count: int) -> None:
        """The newest `count` entries of each shard's list (newest first), merged by stamp."""

        def stage(plan: ReadPlan, shards: Sequence[int]) -> int:
            for shard in shards:
                plan.lrange(keys(shard), 0, count - 1)
            return len(shards)

        self._data_read(stage, lambda replies: merge_newest(replies, count), empty=[])

    def _data_read(self, stage: StageOnNode, merge: Merge, *, empty: Any) -> None:
        self._order.append(("data", len(self._data)))
        self._data.append(_DataRead(stage, merge, empty))

    def _cached_read(self, keys: ShardKeys, evaluate: Any, *, empty: Any) -> None:
        self._order.append(("cached", self._cached.add(keys, evaluate, empty=empty)))

    def _add(self, name: str, keys: Sequence[Key], args: Sequence[Arg]) -> None:
        super()._add(name, keys, args)
        self._order.append(("control", self._control_reads))
        self._control_reads += 1

    # --- running it ------------------------------------------------------------------------
    async def run(
        self, run_group: RunGroup, groups: Sequence[NodeGroup]
    ) -> tuple[list[Any], list[int]]:
        """The replies of every read, in the order staged, and the `unwritten` shards found
        to hold data now (read again with them, or those replies miss their events).

        `run_group` runs one group's call; `groups` cover every shard once, and one of them
        holds the control keys. A plan may run again (the reader's prepared answers): a run
        keeps its state to itself."""
        cached = self._cached
        run = cached.start([s for g in groups for s in g.shards])
        plans, counts = zip(*(self._group_plan(group, run) for group in groups), strict=True)
        called = [(group, plan) for group, plan in zip(groups, plans, strict=True) if plan.args]
        replies = iter(await asyncio.gather(*(run_group(g, plan) for g, plan in called)))
        got = _Gathered(self._data, run)
        for group, plan, group_counts in zip(groups, plans, counts, strict=True):
            if plan.args:
                self._take_group(group, group_counts, next(replies), got)
        if run.refetch:

            async def call(group: NodeGroup, shards: tuple[int, ...], plan: ReadPlan) -> Any:
                return await run_group(NodeGroup(group.node, shards, False), plan)

            await cached.refetch(run, [(g.shards, partial(call, g)) for g in groups])
        results: list[Any] = []
        for kind, index in self._order:
            if kind == "control":
                results.append(got.control[index])
            elif kind == "data":
                results.append(self._merged(self._data[index], got.partial[index]))
            else:
                results.append(cached.result(index, run))
        return results, got.written

    def _take_group(
        self, group: NodeGroup, counts: list[int], replies: Sequence[Any], got: _Gathered
    ) -> None:
        """Sort one group's replies: control reads, each data read's part, the cache's reads,
        the probe of its unwritten shards."""
        offset = self._control_reads if group.control else 0
        if group.control:
            got.control = replies[:offset]
        for index, count in enumerate(counts):
            got.partial[index] += replies[offset : offset + count]
            offset += count
        if self._cached.reads:
            offset = self._cached.take(group.shards, replies, offset, got.cached)
        if group.unwritten:
            found = replies[offset]
            got.written += [shard for shard, hit in zip(group.unwritten, found, strict=True) if hit]

    def _group_plan(self, group: NodeGroup, run: CacheRun) -> tuple[ReadPlan, list[int]]:
        """One group's call: the control reads first where it holds them, then each data read
        on its shards, then the cache's reads of its shards, then the probe of its unwritten
        shards; with how many replies each data read gives."""
        plan = ReadPlan()
        if group.control:
            plan.keys, plan.args = list(self.keys), list(self.args)
        counts = [read.stage(plan, group.shards) if group.shards else 0 for read in self._data]
        if self._cached.reads:
            self._cached.stage(plan, group.shards, run)
        if group.unwritten:
            plan.exists([self.shards[shard].totals for shard in group.unwritten])
        return plan, counts

    @staticmethod
    def _merged(read: _DataRead, replies: list[Any]) -> Any:
        if not replies:
            return read.empty  # no shard holds data yet
        return replies[0] if len(replies) == 1 else read.merge(replies)  # one part: as it is


def merge_newest(replies: list[Sequence[bytes]], count: int) -> list[bytes]:
    """The newest `count` entries of several newest-first lists, by each entry's last field,
    its stamp (entries written before stamps were kept count as oldest)."""
    entries = [entry for reply in replies for entry in reply]
    entries.sort(key=_stamp, reverse=True)  # stable: one shard's ties keep their order
    return entries[:count]


def _stamp(entry: bytes) -> float:
    fields = entry.split()
    return float(fields[3]) if len(fields) > 3 else 0.0
