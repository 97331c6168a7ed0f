"""The batches a flusher holds: taken from the buffer and not yet settled.

A batch is settled when Redis took it (its flush() markers are released), when it is lost
(counted, and charged to the first flush() behind it), or when the collector closes with it
unwritten (its events go back to the buffer). Every event taken is in exactly one batch in
hand until then, so `in_flight` is exact and nothing is released out of order.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from metrics_store.record.event_buffer import CLOSED, EventBuffer, FlushMarker
from metrics_store.record.events import Event
from metrics_store.record.replay import RecentlyWritten

# Why a collector dropped events: its buffer was full during an outage; Redis refused the
# batch for its content (dead-lettered); the batch's fate was unknown past its id marker's
# life; Redis refused it partway through the script (part of it stored).
BUFFER_FULL, DEAD_LETTER, UNCONFIRMED, PARTIAL = (
    "buffer_full",
    "dead_letter",
    "unconfirmed",
    "partial",
)


@dataclass
class FlushCounters:
    written: int = 0
    refused: int = 0  # refused by the ingest script: stamped too far from Redis's clock
    in_flight: int = 0  # taken from the buffer, not yet settled
    # Lost in the flusher, by reason (the buffer counts its own drops).
    dropped_by: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by.values())


@dataclass
class Batch:
    events: list[Event]
    markers: list[FlushMarker]
    shard: int = 0  # where it is written: every retry goes to the same shard (and id marker)
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    refused: int = 0  # events taken out for their clock, counted in Redis with this batch
    faults: int = 0  # attempts refused for the batch's own content
    # An attempt failed inside the script, after its id marker was set: part of it is stored
    # (Redis does not roll a script back), and every retry will find the marker.
    ran_partway: bool = False
    # When an attempt first may have reached Redis (a lost reply): the id marker written
    # then is what keeps a retry from counting twice, so retries must end before it expires.
    maybe_landed_s: float | None = None


class BatchesInHand:
    """The batch on the wire, the one being prepared, and those kept for a retry after a
    failed pass: oldest first, so flush() markers are released in order."""

    def __init__(self, buffer: EventBuffer, recent: RecentlyWritten | None = None) -> None:
        self.counters = FlushCounters()
        self._buffer = buffer
        # Batches written lately, kept to be written again if the primary moves (replay.py).
        self.recent = RecentlyWritten(0) if recent is None else recent
        self.sent: Batch | None = None
        self.taken: Batch | None = None
        self.retry: deque[Batch] = deque()
        # Events refused for their clock whose batch was lost before it could count them in
        # Redis: the next batch counts them instead.
        self._refused_to_count = 0
        self._written_shards: set[int] = set()

    def take(self, limit: int) -> Batch:
        events, markers = self._buffer.take(limit)
        self.counters.in_flight += len(events)
        self.taken = Batch(events, markers)
        if events:
            self.taken.refused, self._refused_to_count = self._refused_to_count, 0
        return self.taken

    def keep_for_retry(self) -> Batch | None:
        """After a failed pass: the batches in hand wait for a retry; returns the oldest."""
        for batch in (self.sent, self.taken):
            if batch is not None and batch not in self.retry:
                self.retry.append(batch)
        self.sent = self.taken = None
        return self.retry[0] if self.retry else None

    def written(self, batch: Batch) -> None:
        self.counters.written += len(batch.events)
        self.counters.in_flight -= len(batch.events)
        self.recent.add(batch)
        self._written_shards.add(batch.shard)
        self.release(batch)

    def take_written_shards(self) -> set[int]:
        """The shards written since the last call (the upkeep folds what they left waiting).
        An add on the flusher's thread lands in the set returned or in the next one."""
        taken, self._written_shards = self._written_shards, set()
        return taken

    def release(self, batch: Batch) -> None:
        for marker in batch.markers:
            self._buffer.settle(marker)

    def set_aside(self, batch: Batch, kept: list[Event]) -> int:
        """Keep only `kept` of the batch's events; the others are refused for their clock."""
        refused = len(batch.events) - len(kept)
        batch.events = kept
        batch.refused += refused
        self.counters.refused += refused
        self.counters.in_flight -= refused
        self._charge(batch, refused)
        return refused

    def lose(self, batch: Batch, reason: str) -> None:
        """The batch's events are lost for good: counted, and charged to a flush()."""
        count = len(batch.events)
        if batch.maybe_landed_s is None:  # else its count may be in Redis already
            self._refused_to_count += batch.refused
        batch.refused = 0
        dropped_by = self.counters.dropped_by
        dropped_by[reason] = dropped_by.get(reason, 0) + count
        self.counters.in_flight -= count
        batch.events = []
        self._charge(batch, count)
        self.release(batch)

    def put_all_back(self) -> None:
        """Closing: every batch in hand goes back to the buffer, its markers failed."""
        for batch in reversed(list(self._ordered())):  # each goes back to the front
            self.counters.in_flight -= len(batch.events)
            self._buffer.put_back(batch.events)
            for marker in batch.markers:
                marker.fail(CLOSED)
        self.retry.clear()
        self.sent = self.taken = None

    def _charge(self, batch: Batch, lost: int) -> None:
        """Lost events of `batch` fail the first flush() behind them."""
        behind = batch.markers or [b.markers[0] for b in self._later(batch) if b.markers][:1]
        if behind:
            behind[0].lost += lost
        else:
            self._buffer.charge_lost(lost)

    def _ordered(self) -> Iterator[Batch]:
        yield from self.retry
        yield from (b for b in (self.sent, self.taken) if b is not None and b not in self.retry)

    def _later(self, batch: Batch) -> list[Batch]:
        """Batches taken after `batch` and not yet written, oldest first."""
        ordered = list(self._ordered())
        return ordered[ordered.index(batch) + 1 :] if batch in ordered else ordered
