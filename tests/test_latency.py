"""Latency recording, windows and /api/metrics/latency on a real redis-server."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.buckets import bucket_levels, tile_window
from metrics_store.errors import InvalidWindow
from metrics_store.histogram import RELATIVE_ERROR
from metrics_store.read.reader import MetricsReader
from metrics_store.read.windows import parse_window, window_schema_pattern
from metrics_store.record.instrument import track_query
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.harness import StoreHarness, make_harness

DAY = 86_400
LEVELS = bucket_levels(10, 60, 7200, 7 * DAY)


@pytest.fixture
def harness(settings: Settings) -> Iterator[StoreHarness]:
    h = make_harness("redis", settings, T0)
    yield h
    h.close()


# --- windows and tiling (pure) --------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1800", 1800), ("5m", 300), ("1h", 3600), ("24h", DAY), ("7d", 7 * DAY), ("15", 20)],
)
def test_windows_parse_to_whole_buckets(text: str, seconds: int) -> None:
    assert parse_window(text, 10, 7 * DAY) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "1w", "5 m", "1.5h", "8d", "9" * 12])
def test_bad_or_too_long_windows_are_refused(text: str) -> None:
    with pytest.raises(InvalidWindow):
        parse_window(text, 10, 7 * DAY)


@pytest.mark.parametrize("window_s", [300, 1800, 3600, DAY, 7 * DAY])
def test_a_tiling_covers_the_window_once_with_few_kept_buckets(window_s: int) -> None:
    end = int(T0) // 10 * 10 + 10
    tiling = tile_window(end, window_s, T0, LEVELS)
    covered = sorted((start, start + size) for size, start in tiling.buckets)
    assert covered[0][0] == tiling.start_s and covered[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    assert end - window_s <= tiling.start_s < end - window_s + 600  # snapped by < 10 min
    assert len(tiling.buckets) <= window_s // 3600 + 2 * (5 + 9 + 5) + 1
    for size, start in tiling.buckets:  # every bucket is still kept at its age
        level = next(level for level in LEVELS if level.size_s == size)
        assert start + size + level.retention_s > T0


# --- recording --------------------------------------------------------------------------------
def test_ttft_and_queue_time_are_validated_and_nothing_is_written(harness: StoreHarness) -> None:
    for bad in (-1.0, float("nan"), True, "5", float("inf")):
        with pytest.raises(ValueError, match="ttft_ms"):
            harness.collector.record_query("Q2", 10.0, 1, 1.0, ttft_ms=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="queue_time_ms"):
            harness.collector.record_query("Q2", 10.0, 1, 1.0, queue_time_ms=bad)  # type: ignore[arg-type]
    harness.collector.flush()
    assert harness.data_keys() == []


def test_latency_answer_has_every_figure_and_nulls_where_none_was_recorded(
    harness: StoreHarness,
) -> None:
    c = harness.collector
    c.record_query("Q2", 1000.0, 11, 800.0, ttft_ms=200.0, queue_time_ms=50.0)
    c.record_query("Q2", 3000.0, 1, 100.0, ttft_ms=3000.0)  # one token: no TPOT
    c.record_query("Q3", 500.0, 10, 400.0)  # the guide's call: latency only
    c.flush()
    answer = harness.read(MetricsReader.latency)
    assert answer.relativeError == RELATIVE_ERROR
    assert answer.window.seconds == 1800
    q2, q3, q4 = answer.tiers
    assert (q2.latencyMs.count, q2.latencyMs.mean) == (2, 2000.0)
    assert q2.latencyMs.p50 == pytest.approx(2000.0, rel=RELATIVE_ERROR)
    assert q2.latencyMs.p999 == pytest.approx(3000.0, rel=RELATIVE_ERROR)
    assert q2.ttftMs is not None and q2.ttftMs.count == 2
    assert q2.queueTimeMs is not None and q2.queueTimeMs.mean == 50.0
    assert q2.tpotMs is not None and q2.tpotMs.count == 1
    assert q2.tpotMs.mean == 80.0  # (1000 - 200) / (11 - 1)
    assert q3.latencyMs.count == 1
    assert q3.ttftMs is None and q3.queueTimeMs is None and q3.tpotMs is None
    assert q4.latencyMs.model_dump() == dict.fromkeys(
        ("count", "mean", "p50", "p90", "p95", "p99", "p999"), 0
    )


def test_track_query_measures_ttft_when_the_first_token_is_marked(harness: StoreHarness) -> None:
    with track_query("Q4", harness.collector) as query:
        query.first_token()
        sum(range(20_000))
        query.first_token()  # a second mark changes nothing
        query.tokens_generated = 5
    with track_query("Q4", harness.collector):
        pass  # no mark: no TTFT
    harness.collector.flush()
    q4 = harness.read(MetricsReader.latency).tiers[2]
    assert q4.latencyMs.count == 2
    assert q4.ttftMs is not None and q4.ttftMs.count == 1
    assert q4.ttftMs.mean <= q4.latencyMs.p999


def test_history_answers_a_day_old_query_through_the_rollups(harness: StoreHarness) -> None:
    harness.clock.set(T0 - DAY + 3600)
    for _ in range(48):  # 48 queries in one 80-minute chart point: 0.01 per second
        harness.collector.record_query("Q2", 400.0, 2, 100.0, ttft_ms=100.0)
    harness.collector.flush()
    harness.clock.set(T0)
    day = harness.read(lambda r: r.latency(DAY))
    assert day.tiers[0].latencyMs.count == 48
    assert harness.read(MetricsReader.latency).tiers[0].latencyMs.count == 0
    queries = harness.read(lambda r: r.queries(DAY))
    assert queries.totalQueries == 48
    assert len(queries.queryRate) == len(queries.timestamps) == 18
    assert sorted(queries.queryRate) == [0.0] * 17 + [0.01]
    tiers = harness.read(lambda r: r.tiers(DAY)).tiers
    assert tiers[0].requestCount == 48 and tiers[0].p50LatencyMs == pytest.approx(400, rel=0.011)
    assert harness.read(MetricsReader.tiers).tiers[0].requestCount == 0


# --- HTTP -------------------------------------------------------------------------------------
@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from metrics_store.clock import ManualClock

    with TestClient(create_app(settings, ManualClock(T0))) as test_client:
        yield test_client


def test_latency_endpoint_answers_the_contracts_shape(client: TestClient) -> None:
    body = client.get("/api/metrics/latency", params={"window": "5m", "tier": "Q3"}).json()
    assert set(body) == {"window", "relativeError", "tiers"}
    assert body["window"]["seconds"] == 300
    assert body["window"]["end"].endswith("Z")
    [q3] = body["tiers"]
    assert set(q3) == {"name", "relativeError", "latencyMs", "ttftMs", "queueTimeMs", "tpotMs"}
    assert q3["relativeError"] == body["relativeError"] == 0.011
    assert q3["name"] == "Q3" and q3["ttftMs"] is None
    assert "/api/metrics/latency" in client.get("/api/openapi.json").json()["paths"]


@pytest.mark.parametrize("path", ["latency", "queries", "tiers", "routing"])
@pytest.mark.parametrize("window", ["8d", "soon", "0"])
def test_bad_windows_get_422_with_the_error_body(
    client: TestClient, path: str, window: str
) -> None:
    response = client.get(f"/api/metrics/{path}", params={"window": window})
    assert response.status_code == 422
    assert set(response.json()) == {"error", "message", "details"}


def test_a_window_past_a_shorter_history_gets_422_from_the_store(settings: Settings) -> None:
    """The schema spells the default history; a store keeping less refuses the rest itself."""
    from metrics_store.clock import ManualClock

    short = settings.replace(history_s=3600)
    with TestClient(create_app(short, ManualClock(T0))) as client:
        response = client.get("/api/metrics/latency", params={"window": "2h"})
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidWindow"
    assert response.json()["details"] == {"window": "2h"}


def test_unknown_tier_gets_404(client: TestClient) -> None:
    response = client.get("/api/metrics/latency", params={"tier": "Q9"})
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message", "details"}


@pytest.mark.parametrize("history_s", [604_800, 86_400, 1800, 12_345])
def test_the_schema_pattern_accepts_exactly_the_windows_parse_accepts(history_s: int) -> None:
    pattern = re.compile(window_schema_pattern(history_s))
    samples = [f"{n}{u}" for u in ("", "s", "m", "h", "d") for n in range(0, 12_000, 7)]
    samples += [str(n) for n in range(history_s - 20, history_s + 20)] + ["0005m", "00"]
    for text in samples:
        try:
            parse_window(text, 1, history_s)
            accepted = True
        except InvalidWindow:
            accepted = False
        assert bool(pattern.fullmatch(text)) == accepted, text


def test_the_live_update_carries_the_latency_answer(harness: StoreHarness) -> None:
    harness.collector.record_query("Q3", 120.0, 3, 60.0, ttft_ms=30.0)
    harness.collector.flush()
    update = harness.read(MetricsReader.update)
    assert update.latency is not None
    assert update.latency.tiers[1].latencyMs.count == 1
    assert update.latency.window.seconds == harness.settings.retention.window_s
