"""A wrong clock costs only its own events: Redis's clock decides what is accepted and retired.

These run with the default tolerance (METRICS_CLOCK_SKEW_TOLERANCE_S, 5 minutes) and clocks
that follow the real one, as production does; the other tests trust their moved clocks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.clock import SystemClock
from metrics_store.errors import EventsLost
from metrics_store.record.collector import MetricsCollector
from metrics_store.record.fold import fold_waiting
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.waiting import wait_for, wait_until

THREE_HOURS = 3 * 3600.0


class OffsetClock:
    """The wall clock, off by `offset_s` (a node whose NTP is broken)."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def now(self) -> float:
        return time.time() + self.offset_s


@pytest.fixture
def real_time(redis_url: str, prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=prefix, node="node-ok")


@pytest.fixture
def client(real_time: Settings) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(real_time.redis.url)
    yield c
    c.close()


def test_a_fast_node_loses_its_own_events_and_nobody_elses(
    real_time: Settings, client: redis.Redis
) -> None:
    keys = Keys(real_time.key_prefix)
    normal = MetricsCollector(real_time)
    skewed = None
    try:
        for i in range(100):
            normal.record_query("Q2", 10.0 + i, 5, 5.0)
        normal.flush(timeout_s=20)
        fold_waiting(client, keys, min_age_ms=0)  # its histogram buckets, written now
        buckets = client.zrange(keys.bucket_index, 0, -1)
        assert buckets

        # The fast node starts: its flusher prunes at once, by Redis's clock, not its own.
        skewed_settings = real_time.replace(node="node-fast")
        skewed = MetricsCollector(skewed_settings, clock=OffsetClock(THREE_HOURS))
        for i in range(40):
            skewed.record_query("Q3", 10.0 + i, 5, 5.0)
        with pytest.raises(EventsLost) as lost:
            skewed.flush(timeout_s=20)
        assert lost.value.lost == 40 == skewed.refused_events

        assert all(client.exists(bucket) for bucket in buckets)  # retention left them alone
        with TestClient(create_app(real_time, SystemClock())) as api:
            queries = api.get("/api/metrics/queries").json()
            # The collector's own count comes with its beat.
            health = wait_for(
                lambda: api.get("/api/metrics/health").json(),
                lambda body: _refused_by(body, "node-fast") == 40,
                10,
                "the fast node's own count of refused events",
            )
        assert queries["totalQueries"] == 100  # the normal node's totals are exact
        assert queries["tierDistribution"]["Q3"] == 0
        assert health["refusedEvents"] == {"node-fast": 40}  # the store's own count
        assert _refused_by(health, "node-fast") == 40
        assert client.xlen(keys.query_stream) == 100
    finally:
        normal.close()
        if skewed is not None:
            skewed.close()


def test_a_fast_nodes_heartbeat_is_stamped_by_redis_clock(
    real_time: Settings, client: redis.Redis
) -> None:
    keys = Keys(real_time.key_prefix)
    fast = MetricsCollector(real_time.replace(node="node-fast"),
                            clock=OffsetClock(THREE_HOURS))  # fmt: skip
    try:
        wait_until(
            lambda: client.zscore(keys.live_nodes, "node-fast") is not None,
            10,
            "the fast node's heartbeat",
        )
        seconds, micros = client.time()
        redis_now = seconds + micros / 1e6
        # Three hours fast, the node would look alive three hours after it stopped.
        assert abs(client.zscore(keys.live_nodes, "node-fast") - redis_now) < 60
        for raw in client.hgetall(keys.collectors).values():
            assert abs(orjson.loads(raw)["at"] - redis_now) < 60
        for raw in client.hgetall(keys.processes).values():
            assert abs(orjson.loads(raw)["at"] - redis_now) < 60
    finally:
        fast.close()


def _refused_by(health: dict[str, Any], node: str) -> int:
    return sum(c["refusedEvents"] for c in health["collectors"] if c["node"] == node)


def test_a_batch_mixing_good_and_skewed_stamps_keeps_the_good_ones(
    real_time: Settings, client: redis.Redis
) -> None:
    clock = OffsetClock(0.0)
    collector = MetricsCollector(real_time, clock=clock)
    try:
        collector.flush()
        # One batch: the flusher waits while these are recorded (a tiny flush interval
        # could split them; either way each event is judged by its own stamp).
        for i in range(30):
            clock.offset_s = -THREE_HOURS if i % 3 == 0 else 0.0  # every third one is stale
            collector.record_query("Q2", 1.0, 1, 1.0)
        with pytest.raises(EventsLost) as lost:
            collector.flush(timeout_s=20)
        assert lost.value.lost == 10
        assert collector.written_events == 20
        assert client.xlen(Keys(real_time.key_prefix).query_stream) == 20
    finally:
        collector.close()


def test_zero_tolerance_trusts_the_writers_clock_for_replays(
    real_time: Settings, client: redis.Redis
) -> None:
    replay = real_time.replace(clock_skew_tolerance_s=0)
    collector = MetricsCollector(replay, clock=OffsetClock(-60.0))  # a minute-old backfill
    try:
        collector.record_query("Q2", 1.0, 1, 1.0)
        collector.flush(timeout_s=20)
        assert collector.refused_events == 0
        assert client.xlen(Keys(real_time.key_prefix).query_stream) == 1
    finally:
        collector.close()


def test_events_buffered_through_an_outage_longer_than_the_tolerance_are_kept(
    real_time: Settings, client: redis.Redis
) -> None:
    from metrics_store.record.batch import BatchEncoder
    from metrics_store.redis.scripts import INGEST, lua_script

    encoder = BatchEncoder(real_time, Keys(real_time.key_prefix))
    now = time.time()
    # Stamped ten minutes ago while Redis was away, sent now by a writer whose clock is right.
    waited = [("q", now - 600, "Q2", 5.0, 1, 1.0, False, None, None)] * 5
    batch = encoder.encode(waited, "after-outage", now)  # type: ignore[arg-type]
    assert lua_script(INGEST).run(client, batch.keys, batch.args) == 5
    # Older than retention, they could not be kept: refused, with Redis's clock in the reply.
    ancient = [
        ("q", now - real_time.retention.retention_s - 60, "Q2", 5.0, 1, 1.0, False, None, None)
    ]
    batch = encoder.encode(ancient, "too-old", now)  # type: ignore[arg-type]
    with pytest.raises(redis.ResponseError, match="CLOCKSKEW"):
        lua_script(INGEST).run(client, batch.keys, batch.args)


def test_a_retry_of_a_batch_that_landed_is_a_no_op_whatever_the_clock(
    real_time: Settings, client: redis.Redis
) -> None:
    from metrics_store.record.batch import BatchEncoder
    from metrics_store.redis.scripts import INGEST, lua_script

    encoder = BatchEncoder(real_time, Keys(real_time.key_prefix))
    now = time.time()
    events = [("q", now, "Q2", 5.0, 1, 1.0, False, None, None)] * 3
    ingest = lua_script(INGEST)
    first = encoder.encode(events, "batch-1", now)  # type: ignore[arg-type]
    assert ingest.run(client, first.keys, first.args) == 3
    # The retry after a lost reply comes late, from a clock that has since jumped.
    late = encoder.encode(events, "batch-1", now + THREE_HOURS)  # type: ignore[arg-type]
    assert ingest.run(client, late.keys, late.args) == -1
