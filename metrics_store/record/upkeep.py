"""A collector's upkeep, on a thread and a schedule of its own: its heartbeat and counters,
its loop health, the fold of histogram bins no batch came to fold (fold.py), the retirement
of old buckets, a look at which server is the primary (a move means the flusher writes its
recent batches again: replay.py), and the objectives its queries are judged by (judge.py).

It never waits for the batch in hand: a batch may wait minutes for a replica to acknowledge
it, or for Redis to have memory again, while the primary still takes these small writes, and
the node must stay live all that time. Stamps and prunes follow Redis's clock, the one clock
every process shares.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import redis

from metrics_store.clock import Clock
from metrics_store.live import collector_stats, process_health
from metrics_store.live.collector_stats import CollectorCounters
from metrics_store.loops import LoopGuard
from metrics_store.record.fold import fold_waiting
from metrics_store.record.judge import QueryJudge
from metrics_store.record.replay import PrimaryWatch
from metrics_store.record.retention import prune_retired_buckets
from metrics_store.redis.client import redis_now
from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import Topology

# What the flusher reports each beat: its counters (Redis's clock stamps them).
CountersNow = Callable[[], CollectorCounters]
# The shards the flusher wrote since the last call (in_hand.py).
WrittenShards = Callable[[], set[int]]
# An idle collector folds every shard this often (beats), its own shards every beat.
FOLD_ALL_EVERY_BEATS = 10


class Upkeep:
    """`run` is the body of the upkeep thread; it returns once `stopping` is set."""

    def __init__(
        self,
        client: redis.Redis,
        topology: Topology,
        clock: Clock,
        counters_now: CountersNow,
        stopping: threading.Event,
        primary: PrimaryWatch | None = None,
        judge: QueryJudge | None = None,
        written_shards: WrittenShards = set,
    ) -> None:
        self._client = client
        self._topology = topology
        self._settings = topology.settings
        self._keys = Keys(self._settings.key_prefix)
        self._clock = clock
        self._counters_now = counters_now
        self._stopping = stopping
        self._primary = primary
        self._judge = judge
        self._objectives_guard = LoopGuard("collector-objectives")
        self._watch_guard = LoopGuard("collector-primary-watch")
        self._beat_guard = LoopGuard("collector-heartbeat")
        self._prune_guard = LoopGuard("collector-retention")
        self._fold_guard = LoopGuard("collector-fold")
        self._written_shards = written_shards
        self._unfolded: set[int] = set()  # shards written, with entries waiting since
        self._beats = 0
        self._prune_due_s = 0.0  # by retention's clock (below)

    def run(self) -> None:
        interval_s = self._settings.liveness.heartbeat_interval_s
        while True:
            self.once()
            if self._stopping.wait(interval_s):
                return

    def last_beat(self) -> None:
        """Once the flusher has finished: its final counters, so /health shows what it wrote
        and lost up to the end."""
        self._beat_guard.call(self._heartbeat)

    def once(self) -> None:
        """One beat, and a prune when one is due; failures are the guards' to count."""
        if self._primary is not None:  # first: a moved primary is the flusher's to act on
            self._watch_guard.call(self._watch_primary)
        self._beat_guard.call(self._heartbeat)
        self.refresh_objectives()
        self._fold_guard.call(self._fold_waiting)
        self._prune_guard.call(self._prune_when_due)

    def refresh_objectives(self) -> None:
        """The objectives queries are judged by, if they changed (judge.py)."""
        if self._judge is not None:
            self._objectives_guard.call(partial(self._judge.refresh, self._client))

    def _watch_primary(self) -> None:
        assert self._primary is not None
        self._primary.look(self._topology.primary_address(self._client))

    def _heartbeat(self) -> None:
        # Stamped by Redis's clock inside the write (whatever this node's clock says, even
        # at tolerance 0): a node whose clock is hours fast must not look alive for hours
        # after it stops, nor one hours slow look dead.
        now_s = collector_stats.beat(self._client, self._keys, self._counters_now())
        self._beats += 1
        record = process_health.current_record(self._settings.node, "collector", now_s)
        prune = self._beats % process_health.PRUNE_EVERY_BEATS == 1
        process_health.publish(self._client, self._keys, record, prune=prune)
        if prune:  # now and then: forget crashed collectors' counters
            collector_stats.forget_silent(self._client, self._keys)

    def _fold_waiting(self) -> None:
        """Histogram bins that waited a fold's age go into their hashes, though no batch comes
        to fold them (fold.py): each beat on the shards this collector wrote, until nothing
        waits there; every FOLD_ALL_EVERY_BEATS beats on every shard, for the bins of a
        collector that died before its own upkeep folded them."""
        self._unfolded |= self._written_shards()
        every = range(len(self._topology.shards))
        for shard in every if self._beats % FOLD_ALL_EVERY_BEATS == 1 else sorted(self._unfolded):
            if fold_waiting(self._client, self._topology.shards[shard]).waiting == 0:
                self._unfolded.discard(shard)

    def _retention_now(self) -> float:
        """Retention's clock: Redis's, so one node's fast clock cannot retire the buckets
        everyone else is still writing; or, for a store that trusts its writers' clocks
        (tolerance 0: replays, simulated time), this node's, as its events are stamped."""
        if self._settings.recording.clock_skew_tolerance_s == 0:
            return self._clock.now()
        return redis_now(self._client)

    def _prune_when_due(self) -> None:
        """Once per bucket of retention's clock: often enough that a bucket goes soon after it
        retires, and never scheduled by this node's clock where that is not retention's."""
        now_s = self._retention_now()
        if self._prune_due_s - self._settings.retention.bucket_s <= now_s < self._prune_due_s:
            return  # pruned within the last bucket (a clock stepped back prunes at once)
        self._prune_due_s = now_s + self._settings.retention.bucket_s
        for shard in self._topology.shards:  # each shard indexes its own buckets
            prune_retired_buckets(
                self._client, shard, now_s, transaction=self._topology.transactions
            )
