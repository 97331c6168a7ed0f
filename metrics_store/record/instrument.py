"""Context managers that time a query or a routing decision and record it, sync or async.

from metrics_store.record.instrument import track_query, track_routing_decision

with track_query("Q3") as query:          # or: async with track_query("Q3") as query:
    for chunk in backend.stream(prompt):
        query.first_token()                # the first call marks the time to first token
        ...
    query.tokens_generated = tokens
    query.generation_time_ms = gen_ms
# recorded with the measured latency (and TTFT, if marked); had the block raised, is_error=True

with track_routing_decision() as decision:
    decision.complexity, decision.score = classify(prompt)
    decision.tier = pick_tier(decision.complexity)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypeVar

from metrics_store.record.collector import MetricsCollector, get_metrics_collector

Target = TypeVar("Target")


@dataclass
class TrackedQuery:
    """What the block reports about its query; latency (and TTFT, if marked) is measured."""

    tier: str
    tokens_generated: int = 0
    generation_time_ms: float = 0.0
    is_error: bool = False
    queue_time_ms: float | None = None
    started_at: float = field(default=0.0, repr=False)
    first_token_at: float | None = field(default=None, repr=False)

    def first_token(self) -> None:
        """Mark the first token's arrival; later calls are ignored (streaming loops may repeat)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def ttft_ms(self) -> float | None:
        """Milliseconds from the block's start to the first token, if it was marked."""
        if self.first_token_at is None:
            return None
        return max(0.0, (self.first_token_at - self.started_at) * 1000.0)


@dataclass
class TrackedDecision:
    """What the block decided; the decision time is measured for it."""

    complexity: str = ""
    tier: str = ""
    score: float = 0.0
    is_fallback: bool = False


class _Tracker(Generic[Target]):
    """Times a block (with or async with) and records its target when the block ends."""

    def __init__(self, target: Target, collector: MetricsCollector | None) -> None:
        self.target = target
        self._collector = collector
        self._started = 0.0

    def __enter__(self) -> Target:
        self._started = time.perf_counter()
        return self.target

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed_ms = (time.perf_counter() - self._started) * 1000.0
        self._record(self._collector or get_metrics_collector(), elapsed_ms, exc is not None)

    async def __aenter__(self) -> Target:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def _record(self, collector: MetricsCollector, elapsed_ms: float, failed: bool) -> None:
        raise NotImplementedError


class track_query(_Tracker[TrackedQuery]):  # noqa: N801 (used like contextlib's functions)
    """Time the block as one query of `tier` and record it; an exception marks it an error."""

    def __init__(self, tier: str, collector: MetricsCollector | None = None) -> None:
        super().__init__(TrackedQuery(tier), collector)

    def __enter__(self) -> TrackedQuery:
        query = super().__enter__()
        query.started_at = self._started
        return query

    def _record(self, collector: MetricsCollector, elapsed_ms: float, failed: bool) -> None:
        query = self.target
        collector.record_query(
            tier=query.tier,
            latency_ms=elapsed_ms,
            tokens_generated=query.tokens_generated,
            generation_time_ms=query.generation_time_ms,
            is_error=query.is_error or failed,
            ttft_ms=query.ttft_ms(),
            queue_time_ms=query.queue_time_ms,
        )


class track_routing_decision(_Tracker[TrackedDecision]):  # noqa: N801
    """Time the block as one routing decision and record what it set on the yielded object.

    A block that raises made no decision, so nothing is recorded for it.
    """

    def __init__(self, collector: MetricsCollector | None = None) -> None:
        super().__init__(TrackedDecision(), collector)

    def _record(self, collector: MetricsCollector, elapsed_ms: float, failed: bool) -> None:
        if failed:
            return
        decision = self.target
        collector.record_routing_decision(
            complexity=decision.complexity,
            tier=decision.tier,
            score=decision.score,
            decision_time_ms=elapsed_ms,
            is_fallback=decision.is_fallback,
        )
