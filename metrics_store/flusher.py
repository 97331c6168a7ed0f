"""The collector's background thread: drain the buffer into Redis, batch by batch.

Each batch is one ingest-script call, sent before the next batch is encoded and confirmed
after, so Python's encoding overlaps Redis's execution. A batch that fails is retried on its own,
with backoff and under the same id, until Redis takes it; the script's id marker makes the
retry count once even when the failed attempt did reach Redis.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field

import redis

from metrics_store import collector_stats
from metrics_store.backoff import Backoff
from metrics_store.batch import BatchEncoder, EncodedBatch
from metrics_store.clock import Clock
from metrics_store.collector_stats import counters_now
from metrics_store.events import Event
from metrics_store.keys import Keys
from metrics_store.replica_ack import acks_wanted, write_batch
from metrics_store.retention import prune_retired_buckets
from metrics_store.script_sender import ScriptSender
from metrics_store.scripts import INGEST, lua_source
from metrics_store.settings import Settings

log = logging.getLogger("metrics_store.collector")


class FlushMarker(threading.Event):
    """A flush() request: it travels through the buffer behind the events recorded before it.

    It is never dropped to make room. It is released once those events are written, or
    failed: when some of them were dropped (counted since it was made), or when the
    collector stopped before writing them; flush() then raises instead of returning.
    """

    def __init__(self, counters: FlushCounters) -> None:
        super().__init__()
        self._counters = counters
        self._dropped_at_start = counters.dropped
        self.failure: str | None = None

    def exempt_one_drop(self) -> None:
        """The next drop is of an event behind this marker: not one this flush waits for."""
        self._dropped_at_start += 1

    def release(self) -> None:
        lost = self._counters.dropped - self._dropped_at_start
        if lost > 0:
            self.fail(f"{lost} events recorded before flush() were dropped")
        self.set()

    def fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        self.set()


Item = Event | FlushMarker

# A refusal rather than an outage (out of memory, a read-only replica) is retried this many
# times, then the batch is dropped: one poisoned batch must not stall the flusher for ever.
REFUSED_BATCH_ATTEMPTS = 10


@dataclass
class FlushCounters:
    written: int = 0
    dropped: int = 0
    in_flight: int = 0  # taken from the buffer, not yet confirmed by Redis
    # Callers drop on overflow while the flusher drops refused batches: one lock for both.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_dropped(self, events: int) -> int:
        with self.lock:
            self.dropped += events
            return self.dropped


@dataclass
class Batch:
    events: list[Event]
    markers: list[FlushMarker]
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Flusher:
    """Writes what the collector buffers; `run` is the body of its thread."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        clock: Clock,
        buffer: deque[Item],
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
        self._encoder = BatchEncoder(settings, self._keys)
        self._script = client.register_script(lua_source(INGEST))
        self._sender = ScriptSender(client, lua_source(INGEST))
        self._backoff = Backoff(base_s=0.05, cap_s=settings.retry_max_backoff_s)
        self._beats = 0
        # flush() markers taken from the buffer and not yet released: they are ahead of every
        # buffered event, so no drop from the buffer concerns them.
        self.holding: set[FlushMarker] = set()

    def run(self) -> None:
        beat_due = prune_due = 0.0
        sent: Batch | None = None
        while not self._stopping.is_set():
            batch = self._take_batch()
            encoded = self._encode(batch) if batch.events else None
            if sent is not None:
                self._confirm(sent)  # Redis ran it while the next batch was being encoded
                sent = None
            if encoded is not None:
                sent = self._send(batch, encoded)
            elif batch.markers:
                self._release(batch)
            now = self._clock.now()
            if now >= beat_due:
                self._heartbeat(now)
                beat_due = now + self._settings.heartbeat_interval_s
            if now >= prune_due:
                self._prune(now)
                prune_due = now + self._settings.bucket_s
            if sent is not None or batch.markers or self._buffer:
                continue  # more may be waiting: write it before sleeping
            self._wake.wait(self._settings.flush_interval_s)
            self._wake.clear()
        if sent is not None:
            self._confirm(sent)
        self._sender.discard()
        self._fail_waiting_flushes()

    # --- one batch --------------------------------------------------------------------------
    def _take_batch(self) -> Batch:
        batch = Batch([], [])
        limit = self._settings.batch_max_events
        buffer = self._buffer
        while len(batch.events) < limit:
            try:
                item = buffer.popleft()
            except IndexError:
                break
            if isinstance(item, FlushMarker):
                batch.markers.append(item)
                self.holding.add(item)
                break  # the flush waits for exactly what came before it
            batch.events.append(item)
        self.counters.in_flight += len(batch.events)
        return batch

    def _encode(self, batch: Batch) -> EncodedBatch:
        return self._encoder.encode(batch.events, batch.batch_id, self._clock.now())

    def _send(self, batch: Batch, encoded: EncodedBatch) -> Batch | None:
        """Put the batch on the wire; if that fails, write it the slow way now."""
        if acks_wanted(self._settings):
            # Replicas must acknowledge it (replica_ack.py): written and confirmed right here.
            try:
                write_batch(self._client, self._script, encoded.keys, encoded.args, self._settings)
                self._done(batch)
            except redis.RedisError:
                self._write_until_done(batch)
            return None
        try:
            self._sender.send(encoded.keys, encoded.args)
            return batch
        except redis.RedisError:
            self._write_until_done(batch)
            return None

    def _confirm(self, batch: Batch) -> None:
        try:
            self._sender.receive()
            self._done(batch)
        except redis.RedisError:
            self._write_until_done(batch)  # same id: counted once if the first try landed

    def _done(self, batch: Batch) -> None:
        self.counters.written += len(batch.events)
        self.counters.in_flight -= len(batch.events)
        self._backoff.reset()
        self._release(batch)

    def _release(self, batch: Batch) -> None:
        for marker in batch.markers:
            marker.release()
            self.holding.discard(marker)

    def _write_until_done(self, batch: Batch) -> None:
        """Retry the batch with backoff until Redis takes it (or refuses it for good)."""
        attempt = 0
        while True:
            try:
                encoded = self._encode(batch)
                write_batch(self._client, self._script, encoded.keys, encoded.args, self._settings)
                if attempt:
                    log.warning("Redis is back: the retried batch is written")
                self._done(batch)
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failure = f"Redis unavailable ({exc})"
            except redis.RedisError as exc:
                failure = f"Redis refused the batch ({exc})"
                if attempt >= REFUSED_BATCH_ATTEMPTS:
                    log.error("%s; dropping %d events", failure, len(batch.events))
                    self.counters.count_dropped(len(batch.events))
                    self.counters.in_flight -= len(batch.events)
                    self._release(batch)
                    return
            attempt += 1
            if attempt == 1:
                log.warning("%s; retrying with backoff", failure)
            if self._stopping.wait(self._backoff.next_delay()):
                self._requeue(batch)  # closing: leave them counted as pending
                return

    def _requeue(self, batch: Batch) -> None:
        self.counters.in_flight -= len(batch.events)
        self._buffer.extendleft(reversed(batch.events))
        for marker in batch.markers:
            marker.fail("the collector closed before writing everything")
            self.holding.discard(marker)

    def _fail_waiting_flushes(self) -> None:
        """Stopping: no flush() still in the buffer may wait for ever or return as if done."""
        for item in list(self._buffer):
            if isinstance(item, FlushMarker):
                item.fail("the collector closed before writing everything")

    # --- upkeep -------------------------------------------------------------------------------
    def _prune(self, now_s: float) -> None:
        try:
            prune_retired_buckets(self._client, self._keys, now_s)
        except redis.RedisError as exc:
            log.debug("pruning retired buckets failed: %s", exc)
        except Exception:  # upkeep must never end the thread that writes the events
            log.exception("pruning retired buckets failed")

    def _heartbeat(self, now_s: float) -> None:
        counters = counters_now(
            self._settings.node,
            self.counters.written,
            self.counters.dropped,
            self.pending_events(),
            now_s,
        )
        try:
            collector_stats.beat(self._client, self._keys, counters)
            self._beats += 1
            if self._beats % 600 == 1:  # now and then: forget crashed collectors' counters
                collector_stats.forget_silent(self._client, self._keys, now_s)
        except redis.RedisError as exc:
            log.debug("heartbeat failed: %s", exc)
        except Exception:  # upkeep must never end the thread that writes the events
            log.exception("heartbeat failed")

    def pending_events(self) -> int:
        """Events recorded but not yet written (buffered, or taken and not yet confirmed)."""
        buffered = sum(1 for item in list(self._buffer) if isinstance(item, tuple))
        return buffered + self.counters.in_flight
