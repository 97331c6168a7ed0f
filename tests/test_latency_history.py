"""/api/metrics/latency/history: each chart point's percentiles, checked exactly against a
plain computation over the recorded queries (the same bins and quantiles, no Redis)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.clock import ManualClock
from metrics_store.histogram import bin_index, summarize
from metrics_store.read.reader import MetricsReader
from metrics_store.read.shapes import LatencyHistory
from metrics_store.settings import Settings
from metrics_store.timefmt import iso_utc
from tests.conftest import T0
from tests.harness import StoreHarness, make_harness

TIERS = ("Q2", "Q3", "Q4")


@dataclass(frozen=True)
class Recorded:
    at_s: float
    tier: str
    latency_ms: float
    ttft_ms: float | None


def record(harness: StoreHarness, queries: list[Recorded], every_other_node: bool = False) -> None:
    """Each query at its moment; with `every_other_node`, half of them by a second collector."""
    other = harness.new_collector(node="node-b") if every_other_node else harness.collector
    for i, query in enumerate(queries):
        harness.clock.set(query.at_s)
        collector = other if i % 2 else harness.collector
        collector.record_query(
            query.tier, query.latency_ms, 16, query.latency_ms / 2, ttft_ms=query.ttft_ms
        )
    for collector in {harness.collector, other}:
        collector.flush()
    harness.clock.set(T0)


def spread(span_s: int, count: int, seed: int = 7) -> list[Recorded]:
    """`count` queries over the `span_s` seconds before T0, at uneven moments and latencies."""
    queries = []
    for i in range(count):
        at = T0 - span_s + (i * 7919 + seed) % span_s + 0.5
        tier = TIERS[(i * 5 + seed) % 3]
        latency = 20.0 + ((i * 104729 + seed) % 5000) * (1.0 + TIERS.index(tier))
        ttft = None if i % 4 == 3 else latency * 0.25
        queries.append(Recorded(at, tier, latency, ttft))
    return queries


def expected_points(
    queries: list[Recorded], tier: str, starts: list[int], point_s: int, end_s: int, figure: str
) -> list[tuple[int, float | None, float | None, float | None]]:
    """Per point: (count, p50, p95, p99) of the tier's values in [start, start + point_s)."""
    out: list[tuple[int, float | None, float | None, float | None]] = []
    for start in starts:
        values = [
            q.latency_ms if figure == "latency" else q.ttft_ms
            for q in queries
            if q.tier == tier and start <= q.at_s < min(start + point_s, end_s)
        ]
        known = [v for v in values if v is not None]
        summary = summarize(Counter(bin_index(v) for v in known), sum(known))
        if summary.count:
            out.append((summary.count, summary.p50, summary.p95, summary.p99))
        else:
            out.append((0, None, None, None))
    return out


def check_against(
    answer: LatencyHistory, queries: list[Recorded], point_s: int, figure: str
) -> None:
    current = int(T0) // point_s * point_s
    starts = [current - point_s * (17 - i) for i in range(18)]
    end_s = int(T0) // 10 * 10 + 10  # the end of the current 10-second bucket
    assert answer.pointSeconds == point_s and answer.figure == figure
    assert answer.timestamps == [iso_utc(start) for start in starts]
    assert (answer.window.start, answer.window.end) == (iso_utc(starts[0]), iso_utc(end_s))
    assert [t.name for t in answer.tiers] == list(TIERS)
    for entry in answer.tiers:
        got = list(zip(entry.count, entry.p50, entry.p95, entry.p99, strict=True))
        assert got == expected_points(queries, entry.name, starts, point_s, end_s, figure)


def test_each_point_holds_the_percentiles_of_its_own_queries(store: StoreHarness) -> None:
    queries = spread(1800, 400)  # the default 30-minute window: 18 points of 100 s
    queries.append(Recorded(T0, "Q2", 123.0, 30.0))  # in the current, partial point
    record(store, queries, every_other_node=True)
    answer = store.read(lambda r: r.latency_history())
    check_against(answer, queries, 100, "latency")
    assert sum(sum(t.count) for t in answer.tiers) < len(queries)  # the oldest fall outside
    assert all(t.count[-1] for t in answer.tiers[:1])


def test_a_long_window_reads_the_rollups_point_by_point(settings: Settings) -> None:
    harness = make_harness("redis", settings, T0)
    try:
        queries = spread(6 * 3600, 600, seed=3)  # past the 2 hours of fine buckets
        record(harness, queries)
        for figure in ("latency", "ttft"):
            answer = harness.read(
                partial(MetricsReader.latency_history, window_s=6 * 3600, figure=figure)
            )
            check_against(answer, queries, 1200, figure)
    finally:
        harness.close()


def test_an_empty_store_answers_every_point_with_no_value(settings: Settings) -> None:
    harness = make_harness("redis", settings, T0)
    try:
        answer = harness.read(lambda r: r.latency_history(3600))
        for entry in answer.tiers:
            assert entry.count == [0] * 18
            assert entry.p50 == entry.p95 == entry.p99 == [None] * 18
    finally:
        harness.close()


# --- HTTP -------------------------------------------------------------------------------------
@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, ManualClock(T0))) as test_client:
        yield test_client


def test_the_endpoint_answers_a_window_a_figure_and_a_tier(client: TestClient) -> None:
    whole = client.get("/api/metrics/latency/history?window=1h&figure=queue")
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert (body["figure"], body["pointSeconds"], len(body["timestamps"])) == ("queue", 200, 18)
    assert [t["name"] for t in body["tiers"]] == list(TIERS)
    one = client.get("/api/metrics/latency/history?tier=Q3").json()
    assert [t["name"] for t in one["tiers"]] == ["Q3"] and one["figure"] == "latency"
    assert one["window"]["seconds"] <= 1800


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("figure=p99", 422, "ValidationError"),
        ("window=8d", 422, "ValidationError"),  # beyond the history kept
        ("tier=Q9", 404, "NotFound"),
    ],
)
def test_bad_parameters_get_the_error_body(
    client: TestClient, query: str, status: int, error: str
) -> None:
    answer = client.get(f"/api/metrics/latency/history?{query}")
    assert answer.status_code == status
    assert answer.json()["error"] == error
