"""track_query and track_routing_decision: measured, recorded, errors marked and re-raised."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from metrics_store.record.instrument import track_query, track_routing_decision
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.harness import StoreHarness, make_harness


@pytest.fixture
def harness(settings: Settings) -> Iterator[StoreHarness]:
    h = make_harness("redis", settings, T0)
    yield h
    h.close()


def recorded_queries(h: StoreHarness) -> list[dict[bytes, bytes]]:
    h.collector.flush()
    return [fields for _, fields in h.client.xrange(h.keys.query_stream)]


def test_track_query_measures_latency_and_records_what_the_block_set(
    harness: StoreHarness,
) -> None:
    with track_query("Q3", harness.collector) as query:
        sum(range(10_000))
        query.tokens_generated = 42
        query.generation_time_ms = 12.5
    [fields] = recorded_queries(harness)
    assert fields[b"tier"] == b"Q3"
    assert fields[b"tokens"] == b"42"
    assert fields[b"generation_ms"] == b"12.5"
    assert fields[b"error"] == b"0"
    assert float(fields[b"latency_ms"]) > 0


def test_track_query_records_an_error_and_lets_it_propagate(harness: StoreHarness) -> None:
    with pytest.raises(KeyError), track_query("Q2", harness.collector):
        raise KeyError("model gone")
    [fields] = recorded_queries(harness)
    assert fields[b"error"] == b"1"


def test_track_query_in_async_code(harness: StoreHarness) -> None:
    async def serve() -> None:
        async with track_query("Q4", harness.collector) as query:
            await asyncio.to_thread(lambda: None)  # the query spans real awaited work
            query.tokens_generated = 7
        with pytest.raises(RuntimeError):
            async with track_query("Q4", harness.collector):
                raise RuntimeError("boom")

    asyncio.run(serve())
    first, second = recorded_queries(harness)
    assert (first[b"tokens"], first[b"error"]) == (b"7", b"0")
    assert second[b"error"] == b"1"


def test_track_routing_decision_records_the_decision(harness: StoreHarness) -> None:
    with track_routing_decision(harness.collector) as decision:
        decision.complexity, decision.tier, decision.score = "MODERATE", "Q3", 5.5
        decision.is_fallback = True
    with pytest.raises(ValueError), track_routing_decision(harness.collector):
        raise ValueError("classifier crashed")  # no decision made: nothing recorded
    harness.collector.flush()
    [(_, fields)] = harness.client.xrange(harness.keys.routing_stream)
    assert fields[b"complexity"] == b"MODERATE"
    assert fields[b"tier"] == b"Q3"
    assert fields[b"fallback"] == b"1"
    assert float(fields[b"decision_ms"]) >= 0


def test_track_query_with_an_unknown_tier_raises_value_error(harness: StoreHarness) -> None:
    with pytest.raises(ValueError, match="tier"), track_query("Q9", harness.collector):
        pass
