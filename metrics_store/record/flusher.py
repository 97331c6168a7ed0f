"""The collector's background thread: drain the buffer into Redis, batch by batch.

Each batch is one ingest-script call, sent before the next batch is encoded and confirmed
after, so Python's encoding overlaps Redis's execution (`writer.py`). A batch that fails is
retried on its own, under the same id, as its failure says (`retry.py`): an outage is waited
out with backoff, however long it lasts; a batch Redis refuses for its content goes to the
dead-letter stream after a few tries. The script's id marker makes a retry count once even
when the failed attempt did reach Redis. The heartbeat and retention run on a thread of
their own (`upkeep.py`), so they never wait for the batch in hand. When the upkeep sees the
sentinels name another primary, the batches the old one took lately are written again
(`replay.py`).

The loop runs through `run_forever` (metrics_store/loops.py): a failure nobody foresaw is
counted and logged, the batches in hand are kept for a retry, and the thread carries on.
"""

from __future__ import annotations

import logging
import threading

import redis

from metrics_store.clock import Clock
from metrics_store.live.collector_stats import CollectorCounters, counters_now
from metrics_store.loops import LoopGuard, run_forever
from metrics_store.record.batch import BatchEncoder, EncodedBatch
from metrics_store.record.deadletter import DeadLetters
from metrics_store.record.event_buffer import EventBuffer
from metrics_store.record.in_hand import BUFFER_FULL, Batch, BatchesInHand, FlushCounters
from metrics_store.record.judge import QueryJudge
from metrics_store.record.replay import PrimaryWatch, RecentlyWritten
from metrics_store.record.retry import BATCH_FAULT_ATTEMPTS, Retrier, Verdict, note_attempt, verdict
from metrics_store.record.upkeep import Upkeep
from metrics_store.record.writer import BatchWriter
from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import topology_for
from metrics_store.settings import Settings

log = logging.getLogger("metrics_store.record.collector")


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
        self._settings = settings
        self._clock = clock
        self._buffer = buffer
        self._wake = wake
        self._stopping = stopping
        topology = self._topology = topology_for(settings)
        self._client = client
        # Cluster: each shard's data call is followed by a control call (batch.py).
        control = Keys(settings.key_prefix) if topology.control_apart else None
        # Judges each query against the objectives for goodput (judge.py); upkeep refreshes it.
        self._judge = QueryJudge(settings)
        self._encoders = [
            BatchEncoder(settings, shard, control, self._judge) for shard in topology.shards
        ]
        self._shard_picker = topology.shard_picker(client)
        self._writer = BatchWriter(client, topology)
        replay_s = settings.redis.failover_replay_s if topology.primary_moves else 0.0
        recent = RecentlyWritten(
            replay_s,
            max_events=settings.recording.buffer_max_events,  # as much as it may buffer
            max_age_s=settings.recording.batch_id_ttl_s / 2,  # well within the markers' life
        )
        self._hand = BatchesInHand(buffer, recent)
        self._primary = PrimaryWatch()
        self._guard = LoopGuard(
            "collector-flusher", base_s=0.05, cap_s=settings.recording.retry_max_backoff_s
        )
        self._upkeep = Upkeep(
            client,
            topology,
            clock,
            self._counters,
            stopping,
            self._primary,
            self._judge,
            written_shards=self._hand.take_written_shards,
        )
        self._retrier = Retrier(
            settings,
            clock,
            self._writer,
            self._hand,
            self._guard,
            self._encode,
            stopping,
            DeadLetters(client, settings),
        )

    @property
    def counters(self) -> FlushCounters:
        return self._hand.counters

    def pending_events(self) -> int:
        """Events recorded but not yet written (buffered, or taken and not yet confirmed)."""
        return self._buffer.events + self.counters.in_flight

    def run(self) -> None:
        self._upkeep.refresh_objectives()  # before the first batch: judged from the start
        upkeep = threading.Thread(target=self._upkeep.run, name="metrics-upkeep", daemon=True)
        upkeep.start()
        run_forever(self._guard, self._step, self._stopping, after_failure=self._after_failure)
        self._finish()
        upkeep.join()
        self._upkeep.last_beat()

    def _step(self) -> float:
        hand = self._hand
        if hand.retry:
            if self._retrier.until_done(hand.retry[0]):
                hand.retry.popleft()
            return 0.0
        if self._primary.take_change():
            self._replay_after_failover()
            return 0.0
        batch = self._take()
        encoded = self._encode(batch) if batch.events else None
        if hand.sent is not None:
            if not self._confirm(hand.sent):  # Redis ran it while this one was encoded
                return 0.0  # closing: _finish() puts both back
            hand.sent = None
        if encoded is not None:
            if not self._send(batch, encoded):
                return 0.0
        elif batch.markers:
            hand.release(batch)
        hand.taken = None
        if hand.sent is None and not batch.markers and not len(self._buffer):
            self._wake.wait(self._settings.recording.flush_interval_s)
            self._wake.clear()
        return 0.0  # more may be waiting: write it before sleeping

    def _take(self) -> Batch:
        batch = self._hand.take(self._settings.recording.batch_max_events)
        if batch.events:
            batch.shard = self._shard_picker.next()
        return batch

    def _encode(self, batch: Batch) -> EncodedBatch:
        encoder = self._encoders[batch.shard]
        return encoder.encode(batch.events, batch.batch_id, self._clock.now(), batch.refused)

    def _send(self, batch: Batch, encoded: EncodedBatch) -> bool:
        """Put the batch on the wire, or write it now; False only when the collector is
        closing with the batch unwritten."""
        try:
            if self._writer.send(encoded):
                self._hand.sent = batch
                return True
            self._writer.write(encoded)
        except redis.RedisError as exc:
            return self._retrier.until_done(batch, exc)
        self._written(batch)
        return True

    def _confirm(self, batch: Batch) -> bool:
        try:
            self._writer.confirm()
        except redis.RedisError as exc:
            return self._retrier.until_done(batch, exc)  # same id: counted once if it landed
        self._written(batch)
        return True

    def _written(self, batch: Batch) -> None:
        self._guard.succeeded()
        self._hand.written(batch)

    def _replay_after_failover(self) -> None:
        """The sentinels name another primary: what the old one took lately may be gone with
        it. No connection may lead there any more; each kept batch is written again, under its
        own id, so one that survived counts once (replay.py)."""
        hand = self._hand
        if hand.sent is not None:  # confirmed first: it is one of the batches to replay
            if not self._confirm(hand.sent):
                return
            hand.sent = None
        self._writer.discard()
        self._topology.after_primary_moved(self._client)
        batches = hand.recent.take_all()
        restored = 0
        for done, batch in enumerate(batches):
            wrote = self._write_again(batch)
            if wrote is None:
                left = sum(len(b.events) for b in batches[done:])
                log.error("closing mid-replay: %d events the old primary took not sent again", left)
                return
            restored += len(batch.events) if wrote else 0
        if restored:
            log.warning(
                "%d events the old primary had acknowledged were gone after the failover, "
                "and are written again",
                restored,
            )

    def _write_again(self, batch: Batch) -> bool | None:
        """Write a batch once more: True if Redis lacked it, False if it had it (or refused
        it for its content: logged), None if the collector closed first."""
        while True:
            try:
                reply = self._writer.write(self._encode(batch))
            except redis.RedisError as exc:
                if verdict(exc) is not Verdict.OUTAGE:
                    log.error("%d events not written again: %s", len(batch.events), exc)
                    return False
                if self._stopping.wait(self._guard.failed(exc)):
                    return None
                continue
            self._guard.succeeded()
            self._hand.recent.add(batch)  # it may have to survive the next failover too
            return reply != -1

    def _after_failure(self) -> None:
        """After a failed pass (a bug, not a Redis error): keep the batches in hand for a
        retry, the oldest first; a batch that keeps failing is dead-lettered."""
        if self._writer.on_wire and self._hand.sent is not None:  # its reply goes unread
            note_attempt(self._hand.sent, redis.ConnectionError("the reply was not read"))
        self._writer.discard()
        head = self._hand.keep_for_retry()
        if head is not None:
            head.faults += 1
            if head.faults >= BATCH_FAULT_ATTEMPTS:
                self._hand.retry.popleft()
                self._retrier.dead_letter(head, RuntimeError("the flusher failed on this batch"))

    def _finish(self) -> None:
        """Stopping: confirm what is on the wire; leave the rest counted as pending."""
        hand = self._hand
        try:
            if hand.sent is not None and self._writer.on_wire and self._confirm(hand.sent):
                hand.sent = None
        except Exception:
            log.exception("the last batch could not be confirmed")
        hand.put_all_back()
        self._writer.discard()
        self._buffer.fail_markers()

    def _counters(self) -> CollectorCounters:
        c = self.counters
        dropped_by = {**c.dropped_by, BUFFER_FULL: self._buffer.dropped}
        pending = self.pending_events()
        return counters_now(self._settings.node, dropped_by, c.written, pending, c.refused)
