"""flush() tells the truth: it returns only if every event recorded since the previous flush()
is in Redis, and otherwise raises EventsLost with the number lost, outage or not."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from metrics_store.errors import EventsLost
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from workers.redis_process import RedisServerProcess

RECORDED = 20_000


def stored_queries(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis.url)
    try:
        return int(client.xlen(Keys(settings.key_prefix).query_stream))
    finally:
        client.close()


def record_as_fast_as_possible(collector: MetricsCollector, count: int) -> None:
    for i in range(count):
        collector.record_query("Q2", float(i % 500), 10, 5.0)


def test_drops_from_a_full_buffer_while_redis_is_up_fail_the_flush(settings: Settings) -> None:
    # A buffer far smaller than the burst: the recording thread outruns the flusher.
    small = settings.replace(buffer_max_events=50, batch_max_events=50)
    collector = MetricsCollector(small)
    try:
        record_as_fast_as_possible(collector, RECORDED)
        with pytest.raises(EventsLost) as lost:
            collector.flush(timeout_s=60)
        assert lost.value.lost == collector.dropped_events > 0
        assert stored_queries(small) == RECORDED - lost.value.lost == collector.written_events
        collector.flush(timeout_s=60)  # nothing recorded since: nothing to own up to
    finally:
        collector.close()


def test_the_block_policy_makes_the_caller_wait_and_loses_nothing(settings: Settings) -> None:
    blocking = settings.replace(
        buffer_max_events=50,
        batch_max_events=50,
        buffer_full_policy="block",
        buffer_block_timeout_s=30.0,
    )
    collector = MetricsCollector(blocking)
    try:
        record_as_fast_as_possible(collector, RECORDED)
        collector.flush(timeout_s=60)
        assert collector.dropped_events == 0
        assert stored_queries(blocking) == RECORDED
    finally:
        collector.close()


def test_a_flush_owns_up_only_to_events_recorded_since_the_previous_one(
    settings: Settings,
) -> None:
    small = settings.replace(buffer_max_events=50, batch_max_events=50)
    collector = MetricsCollector(small)
    try:
        record_as_fast_as_possible(collector, RECORDED)
        with pytest.raises(EventsLost) as first:
            collector.flush(timeout_s=60)
        collector.record_query("Q3", 1.0, 1, 1.0)  # one event, room for it: nothing lost
        collector.flush(timeout_s=60)
        assert collector.dropped_events == first.value.lost
    finally:
        collector.close()


def test_settings_refuse_an_unknown_policy() -> None:
    with pytest.raises(ValueError, match="buffer_full_policy"):
        Settings(buffer_full_policy="drop_newest")  # type: ignore[arg-type]


def test_losses_behind_a_timed_out_flush_fail_the_next_one(tmp_path: Path, prefix: str) -> None:
    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    settings = Settings(redis_url=server.url, key_prefix=prefix, buffer_max_events=3)
    collector = MetricsCollector(settings)
    try:
        collector.flush()
        server.stop()
        for _ in range(2):
            collector.record_query("Q2", 1.0, 1, 1.0)
        with pytest.raises(TimeoutError):
            collector.flush(timeout_s=0.5)  # gives up; the events stay buffered
        for _ in range(6):
            collector.record_query("Q2", 1.0, 1, 1.0)  # overflow drops some of the first two
        assert collector.dropped_events > 0
        server.start()
        with pytest.raises(EventsLost) as lost:
            collector.flush(timeout_s=30)
        assert lost.value.lost == collector.dropped_events
    finally:
        collector.close(timeout_s=1)
        server.stop()


def test_a_flush_after_close_returns_at_once(settings: Settings) -> None:
    collector = MetricsCollector(settings)
    collector.record_query("Q2", 1.0, 1, 1.0)
    collector.close()
    collector.flush(timeout_s=1)  # nothing pending: returns, never waits for a stopped flusher
