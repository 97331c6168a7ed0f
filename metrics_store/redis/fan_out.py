"""Reads over the store's shards: control reads once, data reads on every shard, then merged.

The reads run as one call of lua/read.lua per node group (`metrics_store.redis.node_reads`): on one
Redis, one group holds the only shard and the control keys, so the whole plan is one call as
ever. On Redis Cluster each primary gets one call that reads the shards it serves that hold
data, and adds them up itself where a read allows it (a window's counters, a histogram's
bins); the replies of the primaries are then merged here: summed counters (exact: every
shard holds disjoint events) and the newest entries by stamp. Cost: one call per primary,
each O(buckets x its shards with data); never O(events).

A shard never written is not read: the call only asks whether it now holds data (its totals
key, which never expires, exists). If one does, the caller reads again with it.

    plan = FanOutPlan(shards)
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

    def __init__(self, data: list[_DataRead], cached: CacheRun | None) -> None:
        self.control: Sequence[Any] = []
        self.partial: list[list[Any]] = [[] for _ in data]  # per data read, every node's part
        self.written: list[int] = []
        self.cached = cached


class FanOutPlan(ReadPlan):
    """A ReadPlan whose own reads hit the control keys, plus data reads over every shard."""

    def __init__(self, shards: Sequence[Keys], cache: BucketCache | None = None) -> None:
        super().__init__()
        self.shards = list(shards)
        self._data: list[_DataRead] = []
        # Reads of bucket keys, answered from the reader's copy where it has one.
        self._cached = CachedReads(shards, cache) if cache is not None else None
        # per read: "control", "data" (read on each shard, merged) or "cached", and its index
        self._order: list[tuple[str, int]] = []
        self._control_reads = 0

    # --- data reads: one read over each shard's keys (one list of keys per shard) -----------
    def sum_shards(self, keys: ShardKeys) -> None:
        """Every member's score summed over all the shards' keys (ZUNION ... WITHSCORES)."""
        if self._cached is not None:
            self._cached_read(keys, evaluate_sum, empty=[])
            return

        def stage(plan: ReadPlan, shards: Sequence[int]) -> int:
            if len(shards) == 1:
                plan.zunion(keys(shards[0]))
            else:  # keys in several slots: ZUNION cannot span them, the script adds them up
                plan.zsum([key for shard in shards for key in keys(shard)])
            return 1

        self._data_read(stage, merge_sums, empty=[])

    def totals_shards(self, keys: ShardKeys, count: int, members: Sequence[Arg]) -> None:
        """TOTALS on each shard's keys (`count` on each), added key by key."""
        if self._cached is not None:
            names = [n if isinstance(n, bytes) else str(n).encode() for n in members]
            self._cached_read(keys, partial(evaluate_totals, names), empty=[0.0] * count)
            return

        def stage(plan: ReadPlan, shards: Sequence[int]) -> int:
            for shard in shards:
                plan.totals(keys(shard), members)
            return len(shards)

        self._data_read(stage, merge_totals, empty=[0.0] * count)

    def hsum_shards(self, keys: ShardKeys) -> None:
        """HSUM over all the shards' hashes (histograms): every field's value added."""
        if self._cached is not None:
            self._cached_read(keys, evaluate_sum, empty=[])
            return

        def stage(plan: ReadPlan, shards: Sequence[int]) -> int:
            plan.hsum([key for shard in shards for key in keys(shard)])
            return 1

        self._data_read(stage, merge_hashes, empty=[])

    def hgetall_shards(self, keys: ShardKey) -> None:
        """HGETALL of one hash per shard (an all-time histogram), fields added over the shards."""
        if self._cached is not None:
            self._cached_read(lambda i: [keys(i)], evaluate_sum, empty=[])
            return

        def stage(plan: ReadPlan, shards: Sequence[int]) -> int:
            if len(shards) == 1:
                plan.hgetall(keys(shards[0]))
            else:
                plan.hsum([keys(shard) for shard in shards])
            return 1

        self._data_read(stage, merge_hashes, empty=[])

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
        assert self._cached is not None
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
        run = cached.start([s for g in groups for s in g.shards]) if cached else None
        plans, counts = zip(*(self._group_plan(group, run) for group in groups), strict=True)
        called = [(group, plan) for group, plan in zip(groups, plans, strict=True) if plan.args]
        replies = iter(await asyncio.gather(*(run_group(g, plan) for g, plan in called)))
        got = _Gathered(self._data, run)
        for group, plan, group_counts in zip(groups, plans, counts, strict=True):
            if plan.args:
                self._take_group(group, group_counts, next(replies), got)
        if cached is not None and run is not None and run.refetch:

            async def call(group: NodeGroup, shards: tuple[int, ...], plan: ReadPlan) -> Any:
                return await run_group(NodeGroup(group.node, shards, False), plan)

            await cached.refetch(run, [(g.shards, partial(call, g)) for g in groups])
        results: list[Any] = []
        for kind, index in self._order:
            if kind == "control":
                results.append(got.control[index])
            elif kind == "data":
                results.append(self._merged(self._data[index], got.partial[index]))
            elif cached is not None and run is not None:
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
        if self._cached is not None and got.cached is not None and self._cached.reads:
            offset = self._cached.take(group.shards, replies, offset, got.cached)
        if group.unwritten:
            found = replies[offset]
            got.written += [shard for shard, hit in zip(group.unwritten, found, strict=True) if hit]

    def _group_plan(self, group: NodeGroup, run: CacheRun | None) -> tuple[ReadPlan, list[int]]:
        """One group's call: the control reads first where it holds them, then each data read
        on its shards, then the cache's reads of its shards, then the probe of its unwritten
        shards; with how many replies each data read gives."""
        plan = ReadPlan()
        if group.control:
            plan.keys, plan.args = list(self.keys), list(self.args)
        counts = [read.stage(plan, group.shards) if group.shards else 0 for read in self._data]
        if self._cached is not None and run is not None and self._cached.reads:
            self._cached.stage(plan, group.shards, run)
        if group.unwritten:
            plan.exists([self.shards[shard].totals for shard in group.unwritten])
        return plan, counts

    @staticmethod
    def _merged(read: _DataRead, replies: list[Any]) -> Any:
        if not replies:
            return read.empty  # no shard holds data yet
        return replies[0] if len(replies) == 1 else read.merge(replies)  # one part: as it is


def merge_sums(replies: list[Sequence[bytes]]) -> list[bytes | float]:
    """ZUNION ... WITHSCORES replies [member, score, ...] of several shards, summed."""
    return [item for pair in _added(replies).items() for item in pair]


def merge_totals(replies: list[Sequence[bytes]]) -> list[float]:
    """TOTALS replies of several shards (one per key, the same keys), added key by key."""
    return [sum(float(value) for value in column) for column in zip(*replies, strict=True)]


def merge_hashes(replies: list[Sequence[bytes]]) -> list[bytes]:
    """HSUM or HGETALL replies [field, value, ...] of several shards, each field's values added.

    Added as floats, exact for bin counts (integers below 2**53); a whole total is written as
    an integer, as read.lua's HSUM writes it, so the merged bins read like one shard's.
    """
    out: list[bytes] = []
    for field, total in _added(replies).items():
        out += (field, b"%d" % total if total.is_integer() else repr(total).encode())
    return out


def _added(replies: list[Sequence[bytes]]) -> dict[bytes, float]:
    """Flat [name, value, ...] replies: each name's values added, in the order first seen."""
    totals: dict[bytes, float] = {}
    get = totals.get
    for flat in replies:
        pairs = iter(flat)
        for name, value in zip(pairs, pairs, strict=True):
            totals[name] = get(name, 0.0) + float(value)
    return totals


def merge_newest(replies: list[Sequence[bytes]], count: int) -> list[bytes]:
    """The newest `count` entries of several newest-first lists, by each entry's last field,
    its stamp (entries written before stamps were kept count as oldest)."""
    entries = [entry for reply in replies for entry in reply]
    entries.sort(key=_stamp, reverse=True)  # stable: one shard's ties keep their order
    return entries[:count]


def _stamp(entry: bytes) -> float:
    fields = entry.split()
    return float(fields[3]) if len(fields) > 3 else 0.0
