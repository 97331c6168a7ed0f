"""The collector: validate on the caller's thread, hand off to a background flusher.

    from metrics_store import get_metrics_collector

    collector = get_metrics_collector()
    collector.record_query(tier="Q2", latency_ms=812.5, tokens_generated=128,
                           generation_time_ms=640.0)
    collector.flush()   # only where you must see the event in Redis before going on

Recording appends a tuple to an in-memory buffer and returns: it never waits for Redis and
never raises for an outage. The flusher thread writes the buffer in batches, one script call
per batch, retrying with backoff under each batch's id so that a retried batch is never
counted twice. When the buffer holds `buffer_max_events`, `buffer_full_policy` decides:
drop the oldest (the default; the caller never waits) or block the caller for room. Either
way flush() tells the truth: it raises EventsLost for every event recorded since the previous
flush() that did not reach Redis. In a forked child the collector starts over (fork.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import redis

from metrics_store.clock import Clock, SystemClock
from metrics_store.errors import EventsLost, InvalidMetric
from metrics_store.record.background import Background
from metrics_store.record.events import Event, QueryEvent, RoutingEvent
from metrics_store.record.fork import ProcessWide, client_for_child, follow_forks
from metrics_store.record.validation import (
    MAX_MS,
    MAX_SCORE,
    check_count,
    check_event,
    check_flag,
    check_name,
    check_number,
)
from metrics_store.redis.topology import sync_client
from metrics_store.settings import Settings, get_settings

log = logging.getLogger(__name__)


class MetricsCollector:
    """Records queries, routing decisions and model availability into Redis."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: redis.Redis | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings or get_settings()
        self._owns_client = client is None
        self._client = client if client is not None else sync_client(self._settings)
        self._clock = clock or SystemClock()
        self._tiers = tuple(self._settings.tiers)
        self._complexities = tuple(self._settings.complexities)
        self._closed = False
        self._start_flusher()
        follow_forks(self)

    def _start_flusher(self) -> None:
        self._background = Background(self._settings, self._client, self._clock)
        # For tests that look inside: the buffer and the flusher of the running background.
        self._buffer = self._background.buffer
        self._flusher = self._background.flusher

    def renew_after_fork(self) -> None:
        """In a forked child: start over with none of the parent's events, threads or sockets.

        An injected client is kept: its pools notice the new process and open connections of
        their own.
        """
        if self._closed:
            return
        if self._owns_client:
            self._client = client_for_child(self._settings, self._client)
        self._start_flusher()

    @property
    def written_events(self) -> int:
        """Events this collector has written to Redis."""
        return self._flusher.counters.written

    @property
    def dropped_events(self) -> int:
        """Events dropped: from a full buffer, or refused by Redis for good."""
        return self._background.dropped

    @property
    def refused_events(self) -> int:
        """Events the store refused because they were stamped too far from Redis's clock."""
        return self._flusher.counters.refused

    # --- the contract's calls ------------------------------------------------------------
    def record_query(
        self,
        tier: str,
        latency_ms: float,
        tokens_generated: int,
        generation_time_ms: float,
        is_error: bool = False,
        ttft_ms: float | None = None,
        queue_time_ms: float | None = None,
    ) -> None:
        """Record one finished query (errored ones too, with is_error=True).

        `ttft_ms` (time to first token) and `queue_time_ms` (waiting before inference began)
        are optional: each query's latency, and these where given, feed the latency histograms.
        """
        event: QueryEvent = (
            "q",
            self._clock.now(),
            check_name("tier", tier, self._tiers),
            check_number("latency_ms", latency_ms, MAX_MS),
            check_count("tokens_generated", tokens_generated),
            check_number("generation_time_ms", generation_time_ms, MAX_MS),
            check_flag("is_error", is_error),
            None if ttft_ms is None else check_number("ttft_ms", ttft_ms, MAX_MS),
            None if queue_time_ms is None else check_number("queue_time_ms", queue_time_ms, MAX_MS),
        )
        self._enqueue(event)

    def record_routing_decision(
        self,
        complexity: str,
        tier: str,
        score: float,
        decision_time_ms: float,
        is_fallback: bool = False,
    ) -> None:
        """Record one routing decision: which tier a query of this complexity went to."""
        event: RoutingEvent = (
            "r",
            self._clock.now(),
            check_name("complexity", complexity, self._complexities),
            check_name("tier", tier, self._tiers),
            check_number("score", score, MAX_SCORE),
            check_number("decision_time_ms", decision_time_ms, MAX_MS),
            check_flag("is_fallback", is_fallback),
        )
        self._enqueue(event)

    def update_model_availability(self, tier: str, available: int, total: int) -> None:
        """Report how many of this node's models for `tier` are healthy, out of how many."""
        checked_tier = check_name("tier", tier, self._tiers)
        checked_available = check_count("available", available)
        checked_total = check_count("total", total)
        if checked_available > checked_total:
            raise InvalidMetric("available", f"must not exceed total ({available} > {total})")
        self._enqueue(("a", self._clock.now(), checked_tier, checked_available, checked_total))

    def flush(self, timeout_s: float | None = None) -> None:
        """Return once everything recorded before this call is in Redis.

        Raises TimeoutError if `timeout_s` passes first (for example while Redis is down);
        the events stay buffered and are written later. Raises EventsLost if some of the
        events recorded since the previous flush() can never be written: dropped from a full
        buffer, refused (by Redis, or for a clock too far from Redis's), or the collector
        closed first.
        """
        self._background.flush(timeout_s)

    async def aflush(self, timeout_s: float | None = None) -> None:
        """flush() for asyncio code: waits in a thread, never blocking the event loop."""
        await asyncio.to_thread(self.flush, timeout_s)

    def close(self, timeout_s: float | None = 5.0) -> None:
        """Write what is buffered (waiting at most `timeout_s`), then stop the flusher."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout_s)
        except (TimeoutError, EventsLost) as exc:
            log.warning("closing with events not written to Redis: %s", exc)
        finally:
            self._background.stop()
            self._client.close()

    @property
    def pending_events(self) -> int:
        """Events recorded but not yet written (buffered, or in a batch not yet confirmed)."""
        return self._flusher.pending_events()

    # --- hand-off ----------------------------------------------------------------------------
    def _enqueue(self, event: Event) -> None:
        if self._closed:
            raise RuntimeError("the collector is closed")
        self._background.put(event)

    def record_events(self, events: Iterable[Event]) -> None:
        """Record events that a collector recorded before, with their stamps (a replay of the
        dead-letter stream); each is checked as the calls check theirs."""
        checked = [check_event(event, self._tiers, self._complexities) for event in events]
        for event in checked:  # all checked first: a bad one records none of them
            self._enqueue(event)


_process_wide = ProcessWide(MetricsCollector)


def get_metrics_collector() -> MetricsCollector:
    """The process-wide collector, created on first use from get_settings()."""
    return _process_wide.get()


def reset_metrics_collector(factory: Callable[[], MetricsCollector] | None = None) -> None:
    """Close the process-wide collector; the next get_metrics_collector() makes a new one."""
    _process_wide.reset(factory)
