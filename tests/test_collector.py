"""The collector's contract: strict validation that writes nothing, flush and close."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.harness import StoreHarness, make_harness
from tests.waiting import wait_until

GOOD_QUERY: dict[str, Any] = {
    "tier": "Q2",
    "latency_ms": 10.0,
    "tokens_generated": 5,
    "generation_time_ms": 8.0,
}
GOOD_DECISION: dict[str, Any] = {
    "complexity": "SIMPLE",
    "tier": "Q2",
    "score": 1.5,
    "decision_time_ms": 2.0,
}

BAD_QUERIES = [
    ("tier", "q2"),
    ("tier", "Q5"),
    ("tier", None),
    ("tier", 2),
    ("latency_ms", -1.0),
    ("latency_ms", math.nan),
    ("latency_ms", math.inf),
    ("latency_ms", "10"),
    ("latency_ms", True),
    ("latency_ms", None),
    ("latency_ms", 1e300),
    # float() of it raised OverflowError, not ValueError
    pytest.param("latency_ms", 10**400, id="latency_ms-10**400"),
    # str() of these raised Python's digit-limit ValueError, which named no field
    pytest.param("tokens_generated", 10**5000, id="tokens_generated-10**5000"),
    pytest.param("tier", 10**5000, id="tier-10**5000"),
    ("tier", "Q2\n"),
    ("tokens_generated", -1),
    ("tokens_generated", 1.0),
    ("tokens_generated", "5"),
    ("tokens_generated", False),
    ("generation_time_ms", -0.5),
    ("generation_time_ms", math.inf),
    ("is_error", 1),
    ("is_error", "yes"),
    ("is_error", None),
]
BAD_DECISIONS = [
    ("complexity", "simple"),
    ("complexity", "TRIVIAL"),
    ("tier", "Q1"),
    ("score", -0.1),
    ("score", math.nan),
    ("score", "1.5"),
    ("decision_time_ms", -3.0),
    ("decision_time_ms", [1]),
    ("is_fallback", 0),
]


class Lying(float):
    """A float subclass whose own comparisons and conversion would pass anything."""

    def __ge__(self, other: object) -> bool:
        return True

    def __le__(self, other: object) -> bool:
        return True

    def __float__(self) -> float:
        return 1.0


@pytest.fixture
def harness(settings: Settings) -> Any:
    h = make_harness("redis", settings, T0)
    yield h
    h.close()


@pytest.mark.parametrize(("field", "value"), BAD_QUERIES)
def test_bad_query_raises_value_error_naming_the_field(
    harness: StoreHarness, field: str, value: object
) -> None:
    with pytest.raises(ValueError, match=field):
        harness.collector.record_query(**{**GOOD_QUERY, field: value})
    harness.collector.flush()
    assert harness.data_keys() == []


@pytest.mark.parametrize(("field", "value"), BAD_DECISIONS)
def test_bad_decision_raises_value_error_naming_the_field(
    harness: StoreHarness, field: str, value: object
) -> None:
    with pytest.raises(ValueError, match=field):
        harness.collector.record_routing_decision(**{**GOOD_DECISION, field: value})
    harness.collector.flush()
    assert harness.data_keys() == []


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("Q2", 3, 2), "available"),
        (("Q2", -1, 2), "available"),
        (("Q2", 1, -2), "total"),
        (("Q2", 1.0, 2), "available"),
        (("Q2", 1, True), "total"),
        (("QQ", 1, 2), "tier"),
    ],
)
def test_bad_availability_raises_value_error(
    harness: StoreHarness, args: tuple[object, object, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        harness.collector.update_model_availability(*args)  # type: ignore[arg-type]
    harness.collector.flush()
    assert harness.data_keys() == []


def test_bad_input_loses_nothing_already_recorded(harness: StoreHarness) -> None:
    harness.collector.record_query(**GOOD_QUERY)
    with pytest.raises(ValueError):
        harness.collector.record_query(**{**GOOD_QUERY, "latency_ms": -1})
    harness.collector.flush()
    assert harness.client.xlen(harness.keys.query_stream) == 1


def test_ints_and_floats_are_both_numbers(harness: StoreHarness) -> None:
    harness.collector.record_query("Q3", 10, 0, 0)
    harness.collector.record_routing_decision("COMPLEX", "Q4", 9, 1)
    harness.collector.flush()
    assert harness.client.xlen(harness.keys.query_stream) == 1
    assert harness.client.xlen(harness.keys.routing_stream) == 1


def test_stream_entries_are_readable_in_redis_cli(harness: StoreHarness) -> None:
    harness.collector.record_query("Q4", 812.5, 128, 640.0, is_error=True)
    harness.collector.flush()
    [(_, fields)] = harness.client.xrange(harness.keys.query_stream)
    assert fields == {
        b"ts": str(T0).encode(),
        b"node": b"node-a",
        b"tier": b"Q4",
        b"latency_ms": b"812.5",
        b"tokens": b"128",
        b"generation_ms": b"640.0",
        b"error": b"1",
    }


def test_flush_returns_once_everything_recorded_is_in_redis(harness: StoreHarness) -> None:
    for _ in range(2500):  # several batches
        harness.collector.record_query(**GOOD_QUERY)
    harness.collector.flush(timeout_s=10)
    assert harness.client.xlen(harness.keys.query_stream) == 2500
    assert harness.collector.written_events == 2500
    assert harness.collector.pending_events == 0


def test_flush_times_out_while_redis_is_unreachable(settings: Settings) -> None:
    dead = settings.replace(redis_url="redis://127.0.0.1:1/0")
    collector = MetricsCollector(dead)
    try:
        collector.record_query(**GOOD_QUERY)  # recording itself neither blocks nor raises
        with pytest.raises(TimeoutError):
            collector.flush(timeout_s=0.3)
        assert collector.pending_events == 1
    finally:
        collector.close(timeout_s=0.1)


def test_buffer_keeps_the_newest_events_when_full(settings: Settings) -> None:
    dead = settings.replace(redis_url="redis://127.0.0.1:1/0", buffer_max_events=10)
    collector = MetricsCollector(dead)
    try:
        for _ in range(25):
            collector.record_query(**GOOD_QUERY)
        # The buffer holds 10; one batch of at most 10 may be in the flusher's hands, retried.
        assert collector.pending_events + collector.dropped_events >= 25 - 10  # one may be moving
        assert collector.pending_events <= 10 + 10
        assert collector.dropped_events >= 25 - 10 - 10
    finally:
        collector.close(timeout_s=0.1)


def test_close_writes_what_is_buffered_then_refuses_more(harness: StoreHarness) -> None:
    for _ in range(10):
        harness.collector.record_query(**GOOD_QUERY)
    harness.collector.close()
    assert harness.client.xlen(harness.keys.query_stream) == 10
    with pytest.raises(RuntimeError, match="closed"):
        harness.collector.record_query(**GOOD_QUERY)
    harness.collector.close()  # closing twice is harmless
    harness.collector.flush()  # and so is flushing a closed collector


def test_recording_from_asyncio_code(harness: StoreHarness) -> None:
    async def handler() -> None:
        harness.collector.record_query(**GOOD_QUERY)
        await harness.collector.aflush(timeout_s=5)

    asyncio.run(handler())
    assert harness.client.xlen(harness.keys.query_stream) == 1


def test_collector_is_thread_safe(harness: StoreHarness) -> None:
    import threading

    def record() -> None:
        for _ in range(500):
            harness.collector.record_query(**GOOD_QUERY)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    harness.collector.flush(timeout_s=10)
    assert harness.client.xlen(harness.keys.query_stream) == 2000


def test_a_subclass_is_checked_by_its_value_not_its_own_methods(harness: StoreHarness) -> None:
    with pytest.raises(ValueError, match="latency_ms"):
        harness.collector.record_query(**{**GOOD_QUERY, "latency_ms": Lying(-5.0)})
    harness.collector.record_query(**{**GOOD_QUERY, "latency_ms": Lying(7.5)})
    harness.collector.flush()
    [(_, fields)] = harness.client.xrange(harness.keys.query_stream)
    assert fields[b"latency_ms"] == b"7.5"


def test_negative_zero_is_stored_as_zero(harness: StoreHarness) -> None:
    harness.collector.record_query(**{**GOOD_QUERY, "latency_ms": -0.0})
    harness.collector.flush()
    [(_, fields)] = harness.client.xrange(harness.keys.query_stream)
    assert fields[b"latency_ms"] == b"0.0"


def test_error_messages_stay_short_whatever_the_value(harness: StoreHarness) -> None:
    for field, value in [("tier", "Q" * 100_000), ("tokens_generated", 10**5000)]:
        with pytest.raises(ValueError, match=f"^{field}: ") as raised:
            harness.collector.record_query(**{**GOOD_QUERY, field: value})
        assert len(str(raised.value)) < 200


@pytest.mark.parametrize("name", ["node-a\n", "node a", "", "n" * 65])
def test_settings_refuse_a_name_outside_the_pattern(name: str) -> None:
    # re's "$" matches before a trailing newline: the names are checked with fullmatch.
    with pytest.raises(ValueError, match="must match"):
        Settings(node=name)
    with pytest.raises(ValueError, match="must match"):
        Settings(tiers=["Q2", name or "\n"])


def test_a_str_enum_tier_counts_by_its_value(harness: StoreHarness) -> None:
    import enum

    class Tier(enum.StrEnum):
        Q3 = "Q3"
        LOWER = "q3"

    harness.collector.record_query(Tier.Q3, 10.0, 1, 1.0)
    with pytest.raises(ValueError, match="tier"):
        harness.collector.record_query(Tier.LOWER, 10.0, 1, 1.0)
    harness.collector.flush()
    [(_, fields)] = harness.client.xrange(harness.keys.query_stream)
    assert fields[b"tier"] == b"Q3"


def flush_in_background(
    collector: MetricsCollector, outcome: list[BaseException | None]
) -> threading.Thread:
    """collector.flush() on another thread; `outcome` gets None or what it raised."""

    def flush() -> None:
        try:
            collector.flush(timeout_s=30)
            outcome.append(None)
        except BaseException as exc:  # the test inspects what was raised
            outcome.append(exc)

    waiter = threading.Thread(target=flush)
    waiter.start()
    return waiter


def test_flush_raises_when_events_it_waits_for_are_dropped(tmp_path: Path, prefix: str) -> None:

    from metrics_store.errors import EventsLost
    from workers.redis_process import RedisServerProcess

    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    # One event per batch: while the flusher retries the first, the rest wait in the buffer
    # ahead of the flush() marker, where the overflow drops them.
    settings = Settings(
        redis_url=server.url, key_prefix=prefix, buffer_max_events=3, batch_max_events=1
    )
    collector = MetricsCollector(settings)
    outcome: list[BaseException | None] = []
    try:
        collector.flush()
        server.stop()
        for _ in range(3):
            collector.record_query(**GOOD_QUERY)

        waiter = flush_in_background(collector, outcome)
        for _ in range(20):  # overflow: the oldest go, some of them recorded before flush()
            collector.record_query(**GOOD_QUERY)
        server.start()
        waiter.join(timeout=40)
        assert len(outcome) == 1
        assert isinstance(outcome[0], EventsLost), outcome
    finally:
        collector.close(timeout_s=1)
        server.stop()


def test_flush_succeeds_when_only_events_recorded_after_it_are_dropped(
    tmp_path: Path, prefix: str
) -> None:

    from workers.redis_process import RedisServerProcess

    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    settings = Settings(redis_url=server.url, key_prefix=prefix, buffer_max_events=3)
    collector = MetricsCollector(settings)
    outcome: list[BaseException | None] = []
    try:
        collector.flush()
        server.stop()
        for _ in range(2):
            collector.record_query(**GOOD_QUERY)

        waiter = flush_in_background(collector, outcome)
        # No event left in the buffer: the flusher holds the two in its retried batch (with
        # the flush() marker, or the marker alone is left behind them).
        wait_until(lambda: collector._buffer.events == 0, 10, "the flusher to take the events")
        for _ in range(6):  # overflow: only events recorded after flush() can go
            collector.record_query(**GOOD_QUERY)
        assert collector.dropped_events > 0
        server.start()
        waiter.join(timeout=40)
        assert outcome == [None]
    finally:
        collector.close(timeout_s=1)
        server.stop()


def test_health_shows_a_closed_collectors_final_counts(harness: StoreHarness) -> None:
    """The last beat comes after the last write: /health does not keep a stale count."""
    for _ in range(7):
        harness.collector.record_query(**GOOD_QUERY)
    harness.collector.close()
    records = [
        orjson.loads(raw) for raw in harness.client.hgetall(harness.keys.collectors).values()
    ]
    assert [record["written"] for record in records] == [7]
