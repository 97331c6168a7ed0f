"""The whole fleet at one moment, for `/metrics`: all-time totals, live nodes, availability.

Read in one bounded call (`MetricsReader.fleet()`): the totals are one sorted set whatever the
event volume, and the rest is O(nodes + replicas + collectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metrics_store.live.snapshots import NodeSnapshot
from metrics_store.read.shapes import HealthStatus, ModelAvailability
from metrics_store.redis.keys import (
    HISTOGRAM_SUM,
    TOTAL_LATENCY_MS,
    TOTAL_QUERIES,
    TOTAL_ROUTING,
    TOTAL_TOKENS,
)


@dataclass(frozen=True)
class Totals:
    """All-time counters, from `{p}:totals` (member "<counter>:<labels>" -> value)."""

    values: dict[str, float]

    @classmethod
    def parse(cls, flat: Sequence[bytes]) -> Totals:
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return cls({member.decode(): float(score) for member, score in pairs})

    def queries(self, tier: str, error: bool) -> float:
        return self.values.get(f"{TOTAL_QUERIES}:{tier}:{int(error)}", 0.0)

    def tokens(self, tier: str) -> float:
        return self.values.get(f"{TOTAL_TOKENS}:{tier}", 0.0)

    def latency_ms(self, tier: str) -> float:
        return self.values.get(f"{TOTAL_LATENCY_MS}:{tier}", 0.0)

    def routing(self, complexity: str, tier: str, fallback: bool) -> float:
        return self.values.get(f"{TOTAL_ROUTING}:{complexity}:{tier}:{int(fallback)}", 0.0)


@dataclass(frozen=True)
class AllTimeHistogram:
    """One figure's all-time bins for one tier (metrics_store/histogram.py), and its sum."""

    bins: dict[int, int]
    sum_ms: float

    @classmethod
    def parse(cls, flat: Sequence[bytes]) -> AllTimeHistogram:
        bins: dict[int, int] = {}
        sum_ms = 0.0
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            if field.decode() == HISTOGRAM_SUM:
                sum_ms = float(value)
            else:
                bins[int(field)] = int(value)
        return cls(bins, sum_ms)


@dataclass(frozen=True)
class Fleet:
    totals: Totals
    histograms: dict[tuple[str, str], AllTimeHistogram]  # (figure, tier) ->
    nodes: list[NodeSnapshot]  # the live nodes' latest snapshots
    availability: list[ModelAvailability]
    health: HealthStatus
    connections: int  # WebSocket clients of the live replicas
