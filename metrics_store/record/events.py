"""The events the collector buffers: plain tuples, cheap to build on the caller's thread."""

from __future__ import annotations

from typing import Literal

# ("q", ts_s, tier, latency_ms, tokens_generated, generation_time_ms, is_error, ttft_ms,
#  queue_time_ms); the last two are None where the caller did not measure them.
QueryEvent = tuple[Literal["q"], float, str, float, int, float, bool, float | None, float | None]
# ("r", ts_s, complexity, tier, score, decision_time_ms, is_fallback)
RoutingEvent = tuple[Literal["r"], float, str, str, float, float, bool]
# ("a", ts_s, tier, available, total)
AvailabilityEvent = tuple[Literal["a"], float, str, int, int]

Event = QueryEvent | RoutingEvent | AvailabilityEvent


def tpot_ms(latency_ms: float, tokens: int, ttft_ms: float | None) -> float | None:
    """Time per output token: the decode time over the tokens after the first; None where
    the query has no TTFT or a single token (docs/latency.md)."""
    if ttft_ms is None or tokens <= 1:
        return None
    return max(0.0, latency_ms - ttft_ms) / (tokens - 1)
