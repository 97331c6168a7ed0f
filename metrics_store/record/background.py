"""The collector's background half: the buffer, the flusher thread, and flush()'s markers.

Started together, and started anew together in a forked child, so a collector never holds a
buffer without the thread that drains it.
"""

from __future__ import annotations

import threading

import redis

from metrics_store.clock import Clock
from metrics_store.errors import EventsLost
from metrics_store.record.event_buffer import EventBuffer
from metrics_store.record.events import Event
from metrics_store.record.flusher import Flusher
from metrics_store.settings import Settings


class Background:
    """An empty buffer and the running thread that writes it to Redis."""

    def __init__(self, settings: Settings, client: redis.Redis, clock: Clock) -> None:
        self.buffer = EventBuffer(
            settings.recording.buffer_max_events,
            settings.recording.buffer_full_policy,
            settings.recording.buffer_block_timeout_s,
        )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.flusher = Flusher(settings, client, clock, self.buffer, self._wake, self._stopping)
        self._thread = threading.Thread(
            target=self.flusher.run, name="metrics-flusher", daemon=True
        )
        self._thread.start()

    def put(self, event: Event) -> None:
        self.buffer.put(event)

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def flush(self, timeout_s: float | None) -> None:
        """Return once everything put before this call is in Redis (see the collector's)."""
        if self.stopped:  # the flusher has written all it ever will
            pending = self.flusher.pending_events()
            if pending:
                raise EventsLost(f"closed with {pending} events not written", pending)
            return
        done = self.buffer.put_marker()
        self._wake.set()
        if not done.wait(timeout_s) and self.buffer.abandon(done):
            raise TimeoutError(f"events not written within {timeout_s} s")
        if done.failure is not None:
            raise EventsLost(done.failure, done.lost)

    def stop(self, join_timeout_s: float = 5.0) -> None:
        """Stop the thread: it confirms what is on the wire and leaves the rest pending."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=join_timeout_s)

    @property
    def dropped(self) -> int:
        return self.buffer.dropped + self.flusher.counters.dropped
