"""Retention and retries: a simulated day reaches a steady state; a retried batch counts once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from metrics_store.read.reader import MetricsReader
from metrics_store.record.batch import CHANGE_FEED_MAXLEN, BatchEncoder
from metrics_store.record.fold import fold_waiting
from metrics_store.record.retention import prune_retired_buckets
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.harness import StoreHarness, make_harness
from tests.waiting import wait_until

HOUR = 3600


@pytest.fixture
def harness(settings: Settings) -> Iterator[StoreHarness]:
    # Two hours of history as well, for the hour roll-ups too (no objective's 30 days): coarse
    # buckets then retire within the simulated day.
    update = {"stream_maxlen": 500, "history_s": 2 * HOUR, "slo_history_s": 0}
    h = make_harness("redis", settings.replace(**update), T0)
    yield h
    h.close()


def test_a_simulated_day_reaches_a_steady_state(harness: StoreHarness) -> None:
    key_counts: dict[int, int] = {}
    memory: dict[int, int] = {}
    for step in range(24 * 6):  # every 10 simulated minutes for a day
        harness.clock.set(T0 + step * 600)
        for i in range(20):
            harness.collector.record_query("Q2", 100.0 + i, 10, 50.0)
            harness.collector.record_routing_decision("SIMPLE", "Q2", 1.0, 2.0)
        harness.collector.flush()
        # Ten minutes pass between steps: every fold due by then (a second's wait) is done.
        fold_waiting(harness.client, harness.keys, min_age_ms=0)
        prune_retired_buckets(harness.client, harness.keys, harness.clock.now())
        if step % 6 == 5:
            hour = (step + 1) // 6
            key_counts[hour] = len(harness.data_keys())
            # Less the change feed: capped by entries (CHANGE_FEED_MAXLEN), a day of one batch
            # per 10 minutes never fills it; its cap is checked below.
            feed = harness.client.memory_usage(harness.keys.change_feed) or 0
            memory[hour] = int(harness.client.info("memory")["used_memory"]) - feed

    # The hour buckets are kept longest: history plus their own hour.
    kept_h = (
        max(harness.settings.retention.retention_s, harness.settings.retention.history_s + HOUR)
        // HOUR
    )
    settled = {h: n for h, n in key_counts.items() if h > kept_h + 1}
    assert len(set(settled.values())) == 1, key_counts  # the same keys, hour after hour
    # Two hours of query, routing and latency-histogram buckets at each level; streams, index.
    assert key_counts[24] < 150
    assert max(memory[h] for h in settled) <= 1.05 * min(memory[h] for h in settled), memory
    assert harness.client.xlen(harness.keys.query_stream) <= 600  # capped (MAXLEN ~ 500)
    assert harness.client.xlen(harness.keys.change_feed) <= CHANGE_FEED_MAXLEN + 100
    # The window still answers: the last half hour holds its three steps of 20 queries.
    assert harness.read(MetricsReader.queries).totalQueries == 60


def test_the_collector_prunes_retired_buckets_by_itself(harness: StoreHarness) -> None:
    harness.collector.record_query("Q3", 10.0, 1, 1.0)
    harness.collector.flush()
    first_bucket = harness.keys.query_bucket(10, int(T0) // 10 * 10)
    assert harness.client.exists(first_bucket)
    harness.clock.advance(harness.settings.retention.retention_s + 60)
    wait_until(lambda: not harness.client.exists(first_bucket), 10, "the flusher's prune")
    # Only the history rollups (kept for history_s) are left, none of them due yet.
    now = harness.clock.now()
    assert harness.client.zcount(harness.keys.bucket_index, "-inf", now) == 0
    assert harness.client.zcard(harness.keys.bucket_index) > 0


def test_a_retried_batch_is_counted_once(harness: StoreHarness) -> None:
    """A retry after a lost reply: the first attempt reached Redis, the retry must not count."""
    encoder = BatchEncoder(harness.settings, harness.keys)
    events = [("q", T0, "Q4", 500.0, 50, 400.0, False, None, None)] * 7
    encoded = encoder.encode(events, uuid.uuid4().hex, T0)  # type: ignore[arg-type]
    ingest = lua_script(INGEST).bind(harness.client)
    assert ingest(keys=encoded.keys, args=encoded.args) == 7
    assert ingest(keys=encoded.keys, args=encoded.args) == -1
    assert harness.read(MetricsReader.queries).totalQueries == 7
    assert harness.client.xlen(harness.keys.query_stream) == 7
