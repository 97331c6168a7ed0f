"""Turn bucket sums read from Redis into the API's shapes. Pure: no Redis, no clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from metrics_store.read.shapes import (
    AccuracyMetrics,
    MatrixCell,
    ModelAvailability,
    QueryMetrics,
    RoutingMetrics,
    TierMetrics,
)
from metrics_store.redis.keys import (
    QUERY_COUNT,
    QUERY_ERRORS,
    QUERY_GOOD,
    QUERY_LATENCY_MS,
    ROUTING_COUNT,
    ROUTING_DECISION_MS,
    ROUTING_FALLBACKS,
    ROUTING_SCORE,
    member,
)
from metrics_store.timefmt import iso_utc

Sums = Mapping[str, float]


def round2(value: float) -> float:
    return round(value, 2)


def ratio(part: float, whole: float) -> float:
    """part / whole to 4 decimals, 0 when whole is 0."""
    return round(part / whole, 4) if whole else 0.0


def mean(total: float, count: float) -> float:
    return round2(total / count) if count else 0.0


def query_metrics(
    tiers: Sequence[str],
    chart_starts: Sequence[int],
    chart_counts: Sequence[float],
    window: Sums,
    now_s: float,
    bucket_s: int,
) -> QueryMetrics:
    """The /queries shape from per-bucket query counts and the window's sums."""
    rates = [count / bucket_s for count in chart_counts]
    if rates:
        elapsed_s = max(1.0, now_s - chart_starts[-1])
        rates[-1] = chart_counts[-1] / elapsed_s
    distribution = {tier: int(window.get(member(QUERY_COUNT, tier), 0)) for tier in tiers}
    total = sum(distribution.values())
    latency = sum(window.get(member(QUERY_LATENCY_MS, tier), 0.0) for tier in tiers)
    return QueryMetrics(
        timestamps=[iso_utc(start) for start in chart_starts],
        queryRate=[round2(rate) for rate in rates],
        totalQueries=total,
        avgLatencyMs=mean(latency, total),
        tierDistribution=distribution,
    )


def parse_recent(entries: Sequence[bytes]) -> tuple[list[float], list[float]]:
    """Sparklines from a recent-query list (newest first): tokens/s and latency, oldest first."""
    # Sixty entries per /tiers answer: written flat, without helpers, as it was a sixth of
    # the request's time (py-spy, docs/performance.md).
    tokens_per_s: list[float] = []
    latency_ms: list[float] = []
    for entry in reversed(entries):
        tokens, generation_ms, latency, *_ = entry.split()  # then its stamp (older: none)
        generation = float(generation_ms)
        tokens_per_s.append(round(int(tokens) * 1000.0 / generation, 2) if generation else 0.0)
        latency_ms.append(round(float(latency), 2))
    return tokens_per_s, latency_ms


def tier_metrics(
    tiers: Sequence[str], window: Sums, recent: Mapping[str, Sequence[bytes]], window_s: int
) -> list[TierMetrics]:
    """One /tiers entry per configured tier, in order, over a window of `window_s`."""
    entries = []
    for tier in tiers:
        requests = window.get(member(QUERY_COUNT, tier), 0.0)
        errors = window.get(member(QUERY_ERRORS, tier), 0.0)
        good = window.get(member(QUERY_GOOD, tier))  # absent: the tier is not judged
        tokens_per_s, latency_ms = parse_recent(recent.get(tier, ()))
        entries.append(
            TierMetrics(
                name=tier,
                tokensPerSec=tokens_per_s,
                latencyMs=latency_ms,
                requestCount=int(requests),
                errorRate=ratio(errors, requests),
                requestsPerSec=round(requests / window_s, 4),
                goodCount=None if good is None else int(good),
                goodputPerSec=None if good is None else round(good / window_s, 4),
            )
        )
    return entries


def parse_availability(
    raw: Mapping[bytes, bytes], live_nodes: set[str], tiers: Sequence[str]
) -> list[ModelAvailability]:
    """Sum each tier's latest available/total over the live nodes.

    `raw` is the availability hash: b"<node>:<tier>" -> b"<available>/<total>".
    """
    available = dict.fromkeys(tiers, 0)
    total = dict.fromkeys(tiers, 0)
    for field, value in raw.items():
        node, _, tier = field.decode().rpartition(":")
        if node not in live_nodes or tier not in available:
            continue
        up, _, of = value.decode().partition("/")
        if not (up.isdigit() and of.isdigit()):
            continue  # not a value the collector writes: ignore it rather than fail the answer
        available[tier] += int(up)
        total[tier] += int(of)
    return [ModelAvailability(tier=t, available=available[t], total=total[t]) for t in tiers]


def routing_metrics(
    complexities: Sequence[str],
    tiers: Sequence[str],
    window: Sums,
    availability: list[ModelAvailability],
) -> RoutingMetrics:
    """The /routing shape: all cells in order, the window's accuracy figures, availability."""
    cells = []
    decisions = 0
    for complexity in complexities:
        for tier in tiers:
            count = window.get(member(ROUTING_COUNT, complexity, tier), 0.0)
            score = window.get(member(ROUTING_SCORE, complexity, tier), 0.0)
            decisions += int(count)
            cells.append(
                MatrixCell(
                    complexity=complexity, tier=tier, count=int(count), avgScore=mean(score, count)
                )
            )
    accuracy = AccuracyMetrics(
        totalDecisions=decisions,
        avgDecisionTimeMs=mean(window.get(ROUTING_DECISION_MS, 0.0), decisions),
        fallbackRate=ratio(window.get(ROUTING_FALLBACKS, 0.0), decisions),
    )
    return RoutingMetrics(
        decisionMatrix=cells, accuracyMetrics=accuracy, modelAvailability=availability
    )
