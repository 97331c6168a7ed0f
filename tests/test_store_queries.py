"""/queries and /tiers aggregates: exact values for known events, on Redis and on fakeredis."""

from __future__ import annotations

from metrics_store.read.reader import MetricsReader
from metrics_store.read.shapes import QueryMetrics, TiersResponse
from tests.conftest import T0
from tests.harness import StoreHarness

BUCKET = int(T0) // 10 * 10  # 1_700_000_020: the bucket holding T0


def read_queries(store: StoreHarness) -> QueryMetrics:
    return store.read(MetricsReader.queries)


def read_tiers(store: StoreHarness) -> TiersResponse:
    return store.read(MetricsReader.tiers)


def test_empty_store_answers_zeros(store: StoreHarness) -> None:
    queries = read_queries(store)
    assert queries.totalQueries == 0
    assert queries.avgLatencyMs == 0
    assert queries.queryRate == [0.0] * 18
    assert queries.tierDistribution == {"Q2": 0, "Q3": 0, "Q4": 0}
    tiers = read_tiers(store).tiers
    assert [t.name for t in tiers] == ["Q2", "Q3", "Q4"]
    assert all(t.tokensPerSec == [] and t.latencyMs == [] for t in tiers)
    assert all(t.requestCount == 0 and t.errorRate == 0 for t in tiers)


def test_query_rate_per_bucket_and_window_totals(store: StoreHarness) -> None:
    c, clock = store.collector, store.clock
    clock.set(BUCKET - 170 + 3)  # the oldest chart bucket
    c.record_query("Q2", 100.0, 10, 50.0)
    clock.set(BUCKET - 10)  # the previous bucket, at its very first instant
    for _ in range(5):
        c.record_query("Q3", 200.0, 20, 100.0)
    clock.set(BUCKET + 4.999)  # the current bucket
    c.record_query("Q4", 1000.0, 30, 0.0, is_error=True)
    c.record_query("Q2", 300.0, 40, 200.0)
    clock.set(T0)
    c.flush()

    queries = read_queries(store)
    assert queries.timestamps[0] == "2023-11-14T22:10:50Z"
    assert queries.timestamps[-1] == "2023-11-14T22:13:40Z"
    assert len(queries.timestamps) == 18
    expected = [0.0] * 18
    expected[0] = 0.1  # 1 query over 10 s
    expected[16] = 0.5  # 5 queries over 10 s
    expected[17] = 0.4  # 2 queries over the 5 s elapsed in the current bucket
    assert queries.queryRate == expected
    assert queries.totalQueries == 8
    assert queries.avgLatencyMs == round((100 + 5 * 200 + 1000 + 300) / 8, 2)
    assert queries.tierDistribution == {"Q2": 2, "Q3": 5, "Q4": 1}


def test_current_bucket_rate_divides_by_at_least_one_second(store: StoreHarness) -> None:
    store.clock.set(BUCKET + 0.2)
    for _ in range(3):
        store.collector.record_query("Q2", 10.0, 1, 1.0)
    store.collector.flush()
    assert read_queries(store).queryRate[-1] == 3.0


def test_window_keeps_thirty_minutes_then_forgets(store: StoreHarness) -> None:
    store.clock.set(T0)
    store.collector.record_query("Q2", 100.0, 10, 50.0, is_error=True)
    store.collector.flush()

    store.clock.set(BUCKET + 1799.9)  # the window now starts at BUCKET: still inside
    assert read_queries(store).totalQueries == 1
    tier = read_tiers(store).tiers[0]
    assert (tier.requestCount, tier.errorRate) == (1, 1.0)

    store.clock.set(BUCKET + 1800.0)  # the window starts at BUCKET + 10: gone
    queries = read_queries(store)
    assert queries.totalQueries == 0
    assert queries.avgLatencyMs == 0
    tier = read_tiers(store).tiers[0]
    assert (tier.requestCount, tier.errorRate) == (0, 0.0)
    assert tier.latencyMs == [100.0]  # sparklines are the last queries, whatever their age


def test_window_sums_span_fine_and_rollup_buckets(store: StoreHarness) -> None:
    # One query in every 10-second bucket of the window: each of the 180 buckets counts once.
    start = BUCKET + 10 - 1800
    for i in range(180):
        store.clock.set(start + 10 * i + 1)
        store.collector.record_query("Q3", float(i), 1, 1.0)
    store.clock.set(start - 5)  # just before the window: must not count
    store.collector.record_query("Q3", 5000.0, 1, 1.0)
    store.clock.set(T0)
    store.collector.flush()
    queries = read_queries(store)
    assert queries.totalQueries == 180
    assert queries.avgLatencyMs == round(sum(range(180)) / 180, 2)


def test_tiers_sparklines_hold_the_last_twenty_oldest_first(store: StoreHarness) -> None:
    store.clock.set(T0)
    for i in range(25):
        store.collector.record_query("Q2", 1000.0 + i, 100 + i, 500.0)
    store.collector.record_query("Q3", 50.0, 7, 0.0)  # zero generation time: 0 tokens/s
    store.collector.flush()
    q2, q3, q4 = read_tiers(store).tiers
    assert q2.latencyMs == [1000.0 + i for i in range(5, 25)]
    assert q2.tokensPerSec == [round((100 + i) / 0.5, 2) for i in range(5, 25)]
    assert q2.requestCount == 25
    assert q3.tokensPerSec == [0.0]
    assert q3.latencyMs == [50.0]
    assert (q4.tokensPerSec, q4.latencyMs, q4.requestCount) == ([], [], 0)


def test_error_rate_per_tier(store: StoreHarness) -> None:
    store.clock.set(T0)
    for i in range(7):
        store.collector.record_query("Q4", 10.0, 1, 1.0, is_error=i < 2)
    store.collector.flush()
    q4 = read_tiers(store).tiers[2]
    assert q4.requestCount == 7
    assert q4.errorRate == round(2 / 7, 4)
