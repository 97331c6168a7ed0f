"""The collector's bounded buffer: events waiting for the flusher, and the flush() markers.

A flush() marker travels through the buffer behind the events recorded before it, and is
released once they are written. Every event lost before it is written (dropped from a full
buffer, or refused later) is charged to the first marker behind it, or, if none is queued yet,
to the next flush() call: so flush() raises EventsLost for exactly the events recorded since
the previous flush() that will never reach Redis, whether Redis was up or down.

When the buffer is full, the policy decides: `drop_oldest` (the caller never waits; the oldest
event goes) or `block` (the caller waits up to a timeout for the flusher to make room, then
drops the oldest as a last resort).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Literal

from metrics_store.record.events import Event

log = logging.getLogger("metrics_store.record.collector")

BufferPolicy = Literal["drop_oldest", "block"]
CLOSED = "the collector closed before writing everything"


class FlushMarker(threading.Event):
    """A flush() request; set once the events ahead of it are written or known lost."""

    def __init__(self, lost: int) -> None:
        super().__init__()
        self.lost = lost  # events ahead of it that will never be written
        self.failure: str | None = None
        self.abandoned = False  # its flush() timed out: its losses go to the next flush()

    def release(self) -> None:
        if self.lost:
            self.fail(f"{self.lost} events recorded before flush() were lost")
        self.set()

    def fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        self.set()


Item = Event | FlushMarker


class EventBuffer:
    """A FIFO of events and markers, shared by recording threads and the flusher thread."""

    def __init__(self, capacity: int, policy: BufferPolicy, block_timeout_s: float) -> None:
        self.capacity = capacity
        self.policy = policy
        self.block_timeout_s = block_timeout_s
        self.dropped = 0  # events dropped from the buffer, in all
        self._items: deque[Item] = deque()
        self._events = 0  # events in _items (markers excluded)
        self._queued_markers: deque[FlushMarker] = deque()  # markers in _items, in order
        self._unclaimed_lost = 0  # lost events with no marker behind them yet
        self._closed = False
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)

    def __len__(self) -> int:
        """Items held: events and flush() markers."""
        return len(self._items)

    @property
    def events(self) -> int:
        """Events held (markers excluded)."""
        return self._events

    def put(self, event: Event) -> None:
        """Append an event; when full, wait for room or drop the oldest, by the policy."""
        with self._lock:
            if self._events >= self.capacity:
                if self.policy == "block":
                    self._room.wait_for(lambda: self._events < self.capacity, self.block_timeout_s)
                if self._events >= self.capacity:
                    self._drop_oldest()
            self._items.append(event)
            self._events += 1

    def put_marker(self) -> FlushMarker:
        """Queue a flush() marker behind everything recorded so far."""
        with self._lock:
            marker = FlushMarker(self._unclaimed_lost)
            self._unclaimed_lost = 0
            if self._closed:  # the flusher has stopped: nobody would ever release it
                marker.lost += self._events
                marker.fail(CLOSED)
                return marker
            self._items.append(marker)
            self._queued_markers.append(marker)
            return marker

    def take(self, limit: int) -> tuple[list[Event], list[FlushMarker]]:
        """Up to `limit` events from the front; a marker ends the take (it waits for them)."""
        events: list[Event] = []
        markers: list[FlushMarker] = []
        with self._lock:
            items = self._items
            while items and len(events) < limit:
                item = items.popleft()
                if isinstance(item, FlushMarker):
                    self._queued_markers.popleft()
                    markers.append(item)
                    break
                events.append(item)
            self._events -= len(events)
            if events and self.policy == "block":
                self._room.notify_all()
        return events, markers

    def put_back(self, events: list[Event]) -> None:
        """Return events to the front (the collector is closing with them unwritten)."""
        with self._lock:
            self._items.extendleft(reversed(events))
            self._events += len(events)

    def charge_lost(self, count: int) -> None:
        """`count` events taken earlier are lost: charge the first marker still queued."""
        with self._lock:
            self._charge(count, 0)

    def fail_markers(self) -> None:
        """Closing: no flush() queued now or later may wait for ever or return as if done."""
        with self._lock:
            self._closed = True
            for marker in self._queued_markers:
                marker.fail(CLOSED)

    def abandon(self, marker: FlushMarker) -> bool:
        """A flush() gave up waiting: its losses become the next flush()'s to report.

        False if the marker was released meanwhile (the flush() has its answer after all).
        """
        with self._lock:
            if marker.is_set():
                return False
            marker.abandoned = True
            for position, queued in enumerate(self._queued_markers):
                if queued is marker:
                    del self._queued_markers[position]
                    self._items.remove(marker)
                    self._charge(marker.lost, position)  # the marker behind it, or the next
                    marker.lost = 0
                    break
            return True

    def settle(self, marker: FlushMarker) -> None:
        """The flusher is done with the events ahead of `marker`: release it."""
        with self._lock:
            if marker.abandoned:  # nobody waits on it: pass its losses on
                self._charge(marker.lost, 0)
                marker.lost = 0
            marker.release()

    def _drop_oldest(self) -> None:
        # Markers ahead of the oldest event were not waiting for it; the first one behind was.
        ahead = []
        while isinstance(self._items[0], FlushMarker):
            ahead.append(self._items.popleft())
        self._items.popleft()
        self._items.extendleft(reversed(ahead))
        self._events -= 1
        self.dropped += 1
        self._charge(1, len(ahead))
        if self.dropped in (1, 1000) or self.dropped % 100_000 == 0:
            log.warning("buffer full: %d oldest events dropped so far", self.dropped)

    def _charge(self, count: int, first_marker: int) -> None:
        if first_marker < len(self._queued_markers):
            self._queued_markers[first_marker].lost += count
        else:
            self._unclaimed_lost += count
