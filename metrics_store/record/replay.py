"""After a failover: write again what the old primary acknowledged in its last seconds.

A primary's acknowledgement can die with it. With Sentinel, a forced failover promotes one
replica while the old primary still takes writes, and a second replica still follows the old
one, so `WAIT 1` is answered and the batch counts as written; about a second later the
sentinels re-point that replica and both resynchronise from the promoted one, dropping it
(docs/reliability.md, "Fault soak"). With `METRICS_REDIS_MIN_REPLICAS_ACK=0` a crash loses
what the primary had not yet sent on. No reply the collector gets tells it so.

So the collector keeps every batch for `METRICS_REDIS_FAILOVER_REPLAY_S` after Redis took it,
and its upkeep asks the sentinels each beat which server is the primary. When the answer
changes, the flusher drops every connection to the old primary and writes each kept batch
again, under its own id: the ingest script's id marker makes a batch that survived count
once, and one that was lost is written now. Nothing is counted twice, so a failover that lost
nothing costs one marker check per kept batch.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # in_hand keeps a RecentlyWritten: a runtime import would be a cycle
    from metrics_store.record.in_hand import Batch

log = logging.getLogger("metrics_store.record.collector")


class PrimaryWatch:
    """Which server the sentinels name as primary, as the upkeep saw it; the flusher asks
    whether it changed since it last asked."""

    def __init__(self) -> None:
        self._seen: str | None = None
        self._changed = threading.Event()

    def look(self, address: str | None) -> None:
        """The primary named now (None: nothing to watch, or no answer)."""
        if address is None:
            return
        if self._seen is not None and address != self._seen:
            log.warning("the primary moved from %s to %s", self._seen, address)
            self._changed.set()
        self._seen = address

    def take_change(self) -> bool:
        """Whether the primary moved since the last call."""
        if not self._changed.is_set():
            return False
        self._changed.clear()
        return True


class RecentlyWritten:
    """The batches Redis took in the last `keep_s` seconds, oldest first (keep_s 0: none).

    The window is counted back from the newest batch kept, not from now: during an outage
    nothing is written, and the batches the dying primary acknowledged last must still be
    kept when the sentinels name a new one, however long they take. Two bounds hold whatever
    happens: at most `max_events` events (the oldest go first, logged), and nothing older than
    `max_age_s` by the clock, so a batch is never written again after its id marker is gone.
    """

    def __init__(
        self,
        keep_s: float,
        max_events: int = 1_000_000,
        max_age_s: float = 1800.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_s = keep_s
        self._max_events = max_events
        self._max_age_s = max_age_s
        self._now = now
        self._kept: deque[tuple[float, Batch]] = deque()
        self.events = 0
        self.dropped = 0  # events let go for the cap before their window ended

    def add(self, batch: Batch) -> None:
        if self.keep_s <= 0 or not batch.events:
            return
        now_s = self._now()
        # A copy: the written batch's flush() markers are settled and must not be kept alive.
        kept = dataclasses.replace(batch, markers=[], faults=0, ran_partway=False)
        self._kept.append((now_s, kept))
        self.events += len(kept.events)
        self._expire(now_s)

    def take_all(self) -> list[Batch]:
        """Every batch still kept, oldest first; the keeper is left empty."""
        self._expire(self._now())
        batches = [batch for _, batch in self._kept]
        self._kept.clear()
        self.events = 0
        return batches

    def _expire(self, now_s: float) -> None:
        kept = self._kept
        newest_s = kept[-1][0] if kept else now_s
        oldest_s = max(newest_s - self.keep_s, now_s - self._max_age_s)
        while kept and kept[0][0] < oldest_s:
            self.events -= len(kept.popleft()[1].events)
        capped = 0
        while kept and self.events > self._max_events:
            count = len(kept.popleft()[1].events)
            self.events -= count
            capped += count
        if capped:
            if not self.dropped:
                log.warning(
                    "%d written events no longer kept for a replay after a failover: more "
                    "than %d in METRICS_REDIS_FAILOVER_REPLAY_S",
                    capped,
                    self._max_events,
                )
            self.dropped += capped
