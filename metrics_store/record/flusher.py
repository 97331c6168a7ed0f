"""The collector's background thread: drain the buffer into Redis, batch by batch.

Each batch is one ingest-script call, sent before the next batch is encoded and confirmed
after, so Python's encoding overlaps Redis's execution. A batch that fails is retried on its own,
with backoff and under the same id, until Redis takes it; the script's id marker makes the
retry count once even when the failed attempt did reach Redis.

The loop runs through `run_forever` (metrics_store/loops.py): a failure nobody foresaw is
counted and logged, the batches in hand are kept for a retry, and the thread carries on.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field

import redis

from metrics_store.clock import Clock
from metrics_store.live import collector_stats, process_health
from metrics_store.live.collector_stats import counters_now
from metrics_store.loops import LoopGuard, run_forever
from metrics_store.record.batch import BatchEncoder, EncodedBatch
from metrics_store.record.event_buffer import CLOSED, EventBuffer, FlushMarker
from metrics_store.record.events import Event
from metrics_store.record.retention import prune_retired_buckets
from metrics_store.redis.client import is_cluster, redis_now
from metrics_store.redis.keys import Keys
from metrics_store.redis.replica_ack import acks_wanted, write_batch
from metrics_store.redis.script_sender import ScriptSender
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.redis.shards import ShardPicker, store_shards
from metrics_store.settings import Settings

log = logging.getLogger("metrics_store.record.collector")

# A refusal rather than an outage (out of memory, a read-only replica, a bug in encoding) is
# retried this many times, then the batch is dropped: one poisoned batch must not stall the
# flusher for ever. Its flush() markers then raise EventsLost.
REFUSED_BATCH_ATTEMPTS = 10
# The ingest script's answer to a batch stamped too far from Redis's clock.
CLOCK_SKEW_REPLY = "CLOCKSKEW"


@dataclass
class FlushCounters:
    written: int = 0
    dropped: int = 0  # lost in the flusher: batches Redis refused for good
    refused: int = 0  # refused by the ingest script: stamped too far from Redis's clock
    in_flight: int = 0  # taken from the buffer, not yet confirmed by Redis


@dataclass
class Batch:
    events: list[Event]
    markers: list[FlushMarker]
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0
    refused: int = 0  # events taken out for their clock, counted in Redis with this batch
    shard: int = 0  # where it is written: every retry goes to the same shard (and id marker)


class ClockSkew(Exception):
    """The ingest script refused a batch: some events lie too far from Redis's clock."""

    def __init__(self, redis_now_s: float) -> None:
        super().__init__(f"events too far from Redis's clock ({redis_now_s:.0f})")
        self.redis_now_s = redis_now_s


class Flusher:
    """Writes what the collector buffers; `run` is the body of its thread."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        clock: Clock,
        buffer: EventBuffer,
        wake: threading.Event,
        stopping: threading.Event,
    ) -> None:
        self.counters = FlushCounters()
        self._settings = settings
        self._client = client
        self._clock = clock
        self._buffer = buffer
        self._wake = wake
        self._stopping = stopping
        self._keys = Keys(settings.key_prefix)
        self._shards = store_shards(settings)
        # Cluster: each shard's data call is followed by a control call (batch.py).
        control = self._keys if settings.redis_cluster else None
        self._encoders = [BatchEncoder(settings, shard, control) for shard in self._shards]
        self._shard_picker = ShardPicker(self._shards, client)
        self._ingest = lua_script(INGEST)
        # Send-then-receive needs one connection to one server: not on a cluster.
        self._sender = None if is_cluster(client) else ScriptSender(client, self._ingest)
        self._guard = LoopGuard(
            "collector-flusher", base_s=0.05, cap_s=settings.retry_max_backoff_s
        )
        self._beat_guard = LoopGuard("collector-heartbeat")
        self._prune_guard = LoopGuard("collector-retention")
        self._beats = 0
        self._beat_due = self._prune_due = 0.0
        # The batch on the wire, the one being prepared, and those kept for a retry after a
        # failed pass: oldest first, so flush() markers are released in order.
        self._sent: Batch | None = None
        self._on_wire = False  # _sent's call awaits its reply on the sender's connection
        self._taken: Batch | None = None
        self._retry: deque[Batch] = deque()

    def run(self) -> None:
        run_forever(self._guard, self._step, self._stopping, after_failure=self._keep_for_retry)
        self._finish()

    def _step(self) -> float:
        if self._retry:
            if self._write_until_done(self._retry[0]):
                self._retry.popleft()
            return 0.0
        batch = self._taken = self._take_batch()
        encoded = self._encode(batch) if batch.events else None
        if self._sent is not None:
            if not self._confirm(self._sent):  # Redis ran it while this one was encoded
                return 0.0  # closing: _finish() puts both back
            self._sent = None
        if encoded is not None:
            if not self._send(batch, encoded):
                return 0.0
        elif batch.markers:
            self._release(batch)
        self._taken = None
        self._upkeep()
        if self._sent is None and not batch.markers and not len(self._buffer):
            self._wake.wait(self._settings.flush_interval_s)
            self._wake.clear()
        return 0.0  # more may be waiting: write it before sleeping

    def _keep_for_retry(self) -> None:
        """After a failed pass: keep the batches in hand, oldest first; give up on poison."""
        if self._sender is not None:
            self._sender.discard()  # the connection's protocol state is unknown
        self._on_wire = False
        for batch in (self._sent, self._taken):
            if batch is not None and batch not in self._retry:
                self._retry.append(batch)
        self._sent = self._taken = None
        head = self._retry[0] if self._retry else None
        if head is not None:
            head.attempts += 1
            if head.attempts >= REFUSED_BATCH_ATTEMPTS:
                log.error("a batch failed %d times; dropping its events", head.attempts)
                self._retry.popleft()
                self._lose(head, len(head.events))

    def _finish(self) -> None:
        """Stopping: confirm what is on the wire; leave the rest counted as pending."""
        try:
            if self._sent is not None and self._on_wire and self._confirm(self._sent):
                self._sent = None
        except Exception:
            log.exception("the last batch could not be confirmed")
        for batch in reversed([*self._retry, self._sent, self._taken]):
            if batch is not None:
                self._requeue(batch)  # newest first: each goes back to the front
        self._retry.clear()
        if self._sender is not None:
            self._sender.discard()
        self._buffer.fail_markers()

    # --- one batch --------------------------------------------------------------------------
    def _take_batch(self) -> Batch:
        events, markers = self._buffer.take(self._settings.batch_max_events)
        self.counters.in_flight += len(events)
        return Batch(events, markers, shard=self._shard_picker.next() if events else 0)

    def _encode(self, batch: Batch) -> EncodedBatch:
        encoder = self._encoders[batch.shard]
        return encoder.encode(batch.events, batch.batch_id, self._clock.now(), batch.refused)

    def _write(self, encoded: EncodedBatch) -> None:
        """Write a batch and wait for its reply: its shard's call, then its control call."""
        for call in (encoded, encoded.control):
            if call is not None:
                write_batch(self._client, self._ingest, call.keys, call.args, self._settings)

    def _send(self, batch: Batch, encoded: EncodedBatch) -> bool:
        """Put the batch on the wire; if that fails, write it the slow way now.

        False only when the collector is closing with the batch unwritten.
        """
        if acks_wanted(self._settings) or self._sender is None:
            # Replicas must acknowledge it (replica_ack.py), or the store is a cluster (no
            # send-then-receive): written and confirmed right here.
            try:
                self._write(encoded)
                self._done(batch)
                return True
            except redis.RedisError:
                return self._write_until_done(batch)
        try:
            self._sender.send(encoded.keys, encoded.args)  # one call: its control part is in it
            self._sent, self._on_wire = batch, True
            return True
        except redis.RedisError:
            return self._write_until_done(batch)

    def _confirm(self, batch: Batch) -> bool:
        self._on_wire = False
        try:
            assert self._sender is not None  # only batches sent by it are confirmed here
            self._sender.receive()
            self._done(batch)
            return True
        except redis.RedisError:
            return self._write_until_done(batch)  # same id: counted once if the first landed

    def _done(self, batch: Batch) -> None:
        self.counters.written += len(batch.events)
        self.counters.in_flight -= len(batch.events)
        self._guard.succeeded()
        self._release(batch)

    def _release(self, batch: Batch) -> None:
        for marker in batch.markers:
            self._buffer.settle(marker)

    def _write_until_done(self, batch: Batch) -> bool:
        """Retry the batch with backoff until Redis takes it (or refuses it for good).

        False if the collector started closing first: the batch is left to _finish().
        """
        refusals = 0
        while True:
            try:
                self._write(self._encode(batch))
                self._done(batch)
                return True
            except redis.ResponseError as exc:
                if str(exc).startswith(CLOCK_SKEW_REPLY):
                    self._set_aside_skewed(batch, float(str(exc).split()[1]))
                    continue  # at once: nothing was written, nothing is wrong with Redis
                refusals += 1
                if refusals >= REFUSED_BATCH_ATTEMPTS:
                    log.error(
                        "Redis refused a batch (%s); dropping %d events", exc, len(batch.events)
                    )
                    self._lose(batch, len(batch.events))
                    return True
                delay_s = self._guard.failed(exc)
            except redis.RedisError as exc:
                delay_s = self._guard.failed(exc)
            if self._stopping.wait(delay_s):
                return False

    def _set_aside_skewed(self, batch: Batch, redis_now_s: float) -> None:
        """Keep the events Redis's clock accepts; count the others as refused, in this batch."""
        s = self._settings
        # Margins inside the script's bounds: Redis's clock moves on before the next call.
        margin_s = min(1.0, s.clock_skew_tolerance_s / 10)
        low = redis_now_s - s.retention_s + margin_s
        high = redis_now_s + s.clock_skew_tolerance_s - margin_s
        if abs(self._clock.now() - redis_now_s) > s.clock_skew_tolerance_s - margin_s:
            kept: list[Event] = []  # this node's clock is off: none of its stamps can be trusted
        else:
            kept = [event for event in batch.events if low <= event[1] <= high]
        if len(kept) == len(batch.events):
            kept = []  # the clocks moved across a bound between two calls; never loop on it
        refused = len(batch.events) - len(kept)
        if _worth_logging(self.counters.refused, refused):
            log.warning(
                "%d events refused so far: this node's clock is more than %g s off Redis's "
                "(check NTP), or they were older than retention",
                self.counters.refused + refused,
                s.clock_skew_tolerance_s,
            )
        batch.events = kept
        batch.refused += refused
        self.counters.refused += refused
        self.counters.in_flight -= refused
        self._charge(batch, refused)

    def _lose(self, batch: Batch, count: int) -> None:
        self.counters.dropped += count
        self.counters.in_flight -= count
        batch.events = []
        self._charge(batch, count)
        self._release(batch)

    def _charge(self, batch: Batch, lost: int) -> None:
        """Lost events of `batch` fail the first flush() behind them."""
        behind = batch.markers or [b.markers[0] for b in self._later(batch) if b.markers][:1]
        if behind:
            behind[0].lost += lost
        else:
            self._buffer.charge_lost(lost)

    def _later(self, batch: Batch) -> list[Batch]:
        """Batches taken after `batch` and not yet written, oldest first."""
        ordered = [*self._retry, self._sent, self._taken]
        if batch not in ordered:
            return [b for b in ordered if b is not None]
        return [b for b in ordered[ordered.index(batch) + 1 :] if b is not None]

    def _requeue(self, batch: Batch) -> None:
        self.counters.in_flight -= len(batch.events)
        self._buffer.put_back(batch.events)
        for marker in batch.markers:
            marker.fail(CLOSED)

    # --- upkeep -------------------------------------------------------------------------------
    def _upkeep(self) -> None:
        now = self._clock.now()
        if now >= self._beat_due:
            self._beat_guard.call(lambda: self._heartbeat(now))
            self._beat_due = now + self._settings.heartbeat_interval_s
        if now >= self._prune_due:
            self._prune_guard.call(self._prune)
            self._prune_due = now + self._settings.bucket_s

    def _prune(self) -> None:
        # Retention follows Redis's clock, so one node's fast clock cannot retire the
        # buckets everyone else is still writing.
        now_s = self._shared_now(self._clock.now())
        for shard in self._shards:  # each shard indexes its own buckets
            prune_retired_buckets(self._client, shard, now_s)

    def _shared_now(self, node_now_s: float) -> float:
        """The clock every writer shares: Redis's; or, for a store that trusts its writers'
        clocks (tolerance 0: replays, simulated time), this node's."""
        if self._settings.clock_skew_tolerance_s == 0:
            return node_now_s
        return redis_now(self._client)

    def _heartbeat(self, node_now_s: float) -> None:
        # Stamped by the shared clock, like the beats of the ingest script: a node whose clock
        # is hours fast must not look alive for hours after it stops.
        now_s = self._shared_now(node_now_s)
        counters = counters_now(
            self._settings.node,
            self.counters.written,
            self.counters.dropped + self._buffer.dropped,
            self.pending_events(),
            now_s,
            refused=self.counters.refused,
        )
        collector_stats.beat(self._client, self._keys, counters)
        self._beats += 1
        record = process_health.current_record(self._settings.node, "collector", now_s)
        prune = self._beats % process_health.PRUNE_EVERY_BEATS == 1
        process_health.publish(self._client, self._keys, record, prune=prune)
        if prune:  # now and then: forget crashed collectors' counters
            collector_stats.forget_silent(self._client, self._keys, now_s)

    def pending_events(self) -> int:
        """Events recorded but not yet written (buffered, or taken and not yet confirmed)."""
        return self._buffer.events + self.counters.in_flight


def _worth_logging(before: int, added: int) -> bool:
    """Log the first refusal, then each time the total passes a power of ten."""
    after = before + added
    return before == 0 or len(str(after)) > len(str(before))
