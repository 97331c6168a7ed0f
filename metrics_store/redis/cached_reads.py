"""A plan's reads of bucket keys, answered from the reader's copy (bucket_cache.py).

Each such read (a window's counters, a histogram's bins, a chart's totals) names its keys on
every shard. In the plan's call to each node, this module adds per shard the change feed's
entries since the copy's last (CHANGES) and the keys the copy lacks (FETCH); once the copy has
taken them, it computes the read's reply as read.lua would have: the same shape, the same
sums. A plan prepared once and run again (the reader's prepared answers) computes a read again
only when the copy changed since.

    reads = CachedReads(shards, cache)
    reads.add(lambda i: window_keys(i), evaluate_sum, empty=[])
    run = reads.start(read_shards)
    reads.stage(plan, group.shards, run)            # in each node's call
    offset = reads.take(group.shards, replies, offset, run)
    results = reads.results(run)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from metrics_store.redis.bucket_cache import (
    MAX_FEED_ENTRIES,
    AnswerView,
    BucketCache,
    Pairs,
    as_bytes,
    parse_pairs,
)
from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import Key, ReadPlan

ShardKeys = Callable[[int], Sequence[Key]]
# A read's reply from the answer's contents, the shards read and its keys on each (as bytes).
Evaluate = Callable[[AnswerView, Sequence[int], dict[int, list[bytes]]], Any]
# Runs a plan of cache reads for `shards` on the node serving them: its replies.
RunShards = Callable[[tuple[int, ...], ReadPlan], Awaitable[Sequence[Any]]]
# Per node: the shards it serves, and how to call it.
Nodes = Sequence[tuple[tuple[int, ...], RunShards]]
REFETCH_ROUNDS = 3


@dataclass(frozen=True)
class CachedRead:
    keys: ShardKeys
    evaluate: Evaluate
    empty: Any  # the reply when no shard holds data


@dataclass
class CacheRun:
    """One run's state: which keys each shard's call fetches, what the answer reads."""

    shards: tuple[int, ...]
    keys: list[dict[int, list[bytes]]]
    view: AnswerView
    drops: int  # the copy's drops when the run began
    fetching: dict[int, list[bytes]] = field(default_factory=dict)
    refetch: list[int] = field(default_factory=list)  # shards whose copy was dropped


class CachedReads:
    """The cached reads of one plan."""

    def __init__(self, shards: Sequence[Keys], cache: BucketCache) -> None:
        self._shards = list(shards)
        self._cache = cache
        self.reads: list[CachedRead] = []
        self._keys: dict[tuple[int, ...], list[dict[int, list[bytes]]]] = {}
        # per read: the copy's generation and shards its last result was computed at
        self._results: dict[int, tuple[int, tuple[int, ...], Any]] = {}

    def add(self, keys: ShardKeys, evaluate: Evaluate, *, empty: Any) -> int:
        self.reads.append(CachedRead(keys, evaluate, empty))
        return len(self.reads) - 1

    def start(self, shards: Sequence[int]) -> CacheRun:
        """A run over the shards read (those holding data)."""
        key = tuple(shards)
        keys = self._keys.get(key)
        if keys is None:  # built once per plan and set of shards: a prepared plan reuses them
            keys = self._keys[key] = [
                {shard: [as_bytes(k) for k in read.keys(shard)] for shard in shards}
                for read in self.reads
            ]
        return CacheRun(key, keys, AnswerView(self._cache), self._cache.drops)

    def stage(self, plan: ReadPlan, shards: Sequence[int], run: CacheRun) -> None:
        """Per shard: the feed's entries since the copy's last, and the keys the copy lacks."""
        for shard in shards:
            keys = self._shards[shard]
            last = self._cache.last_id(shard)
            plan.changes(
                keys.change_feed, keys.change_head, keys.fold_state, last, MAX_FEED_ENTRIES
            )
            wanted = (key for per_read in run.keys for key in per_read[shard])
            missing = run.fetching[shard] = self._cache.missing(shard, wanted)
            plan.fetch(missing)

    def take(
        self, shards: Sequence[int], replies: Sequence[Any], offset: int, run: CacheRun
    ) -> int:
        """Give the copy a call's CHANGES and FETCH replies; returns the next offset."""
        for shard in shards:
            changes, flat = replies[offset], replies[offset + 1]
            offset += 2
            fetched: dict[bytes, Pairs] = {
                key: parse_pairs(flat[2 * i], flat[2 * i + 1])
                for i, key in enumerate(run.fetching[shard])
            }
            kept = self._cache.apply(shard, changes, fetched, run.view)
            if not kept or (self._cache.drops != run.drops and self._lacks(shard, run)):
                run.refetch.append(shard)
        return offset

    def _lacks(self, shard: int, run: CacheRun) -> bool:
        """Whether a key of the run is neither held nor fetched by it (another call dropped
        the copy, or let it go, since the run staged its fetches)."""
        own = run.view.fetched.get(shard, {})
        holds = self._cache.holds
        return any(
            key not in own and not holds(shard, key) for keys in run.keys for key in keys[shard]
        )

    async def refetch(self, run: CacheRun, nodes: Nodes) -> None:
        """Read afresh the shards whose copy was dropped (their feed could not vouch for it):
        another call to the nodes serving them."""
        for _ in range(REFETCH_ROUNDS):
            if not run.refetch:
                return
            dropped, run.refetch = set(run.refetch), []
            run.drops = self._cache.drops
            for served, call in nodes:
                shards = tuple(s for s in served if s in dropped)
                if shards:
                    plan = ReadPlan()
                    self.stage(plan, shards, run)
                    self.take(shards, await call(shards, plan), 0, run)
        if run.refetch:
            raise RuntimeError("the change feed kept resetting: is the store being flushed?")

    def result(self, index: int, run: CacheRun) -> Any:
        """The read's reply; computed again only where the copy changed since the last."""
        read = self.reads[index]
        if not run.shards:
            return read.empty  # no shard holds data yet
        generation = self._cache.generation
        last = self._results.get(index)
        transient = bool(run.view.fetched)
        if last is not None and not transient and last[:2] == (generation, run.shards):
            return last[2]
        reply = read.evaluate(run.view, run.shards, run.keys[index])
        if not transient:
            self._results[index] = (generation, run.shards, reply)
        return reply


def _flat(pairs: Pairs) -> list[Any]:
    return [item for pair in pairs.items() for item in pair]


def evaluate_sum(view: AnswerView, shards: Sequence[int], keys: dict[int, list[bytes]]) -> Any:
    """Every name's values summed over every shard's keys: flat [name, total, ...]."""
    if len(shards) == 1:
        return _flat(view.sum(shards[0], keys[shards[0]]))
    total: Pairs = {}
    get = total.get
    for shard in shards:
        for name, value in view.sum(shard, keys[shard]).items():
            total[name] = get(name, 0.0) + value
    return _flat(total)


def evaluate_totals(
    members: list[bytes], view: AnswerView, shards: Sequence[int], keys: dict[int, list[bytes]]
) -> Any:
    """TOTALS' reply over every shard: per key, its members' values added."""
    out: list[float] | None = None
    for shard in shards:
        column = []
        for key in keys[shard]:
            pairs = view.pairs(shard, key)
            column.append(sum(pairs.get(name, 0.0) for name in members))
        out = column if out is None else [a + b for a, b in zip(out, column, strict=True)]
    return out or []
