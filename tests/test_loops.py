"""Every long-running loop outlives a failure nobody foresaw, and says so in /health.

Each test injects an exception that is not a Redis error into one real loop, on the real
redis-server, and shows that the loop's work resumes and that its failure is counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from api.live.hub import ClientHub
from api.live.relay import Relay
from api.live.slot import Frame
from api.live.ticker import Ticker
from api.main import create_app
from metrics_store.clock import SystemClock
from metrics_store.live.live_store import LiveStore
from metrics_store.loops import PROCESS_LOOPS, LoopGuard, LoopRegistry, run_forever
from metrics_store.read.reader import MetricsReader
from metrics_store.read.shapes import MetricsUpdate
from metrics_store.record.collector import MetricsCollector, reset_metrics_collector
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings, get_settings
from tests.waiting import wait_until, wait_until_async
from workers import jobs


def errors_of(loop: str) -> int:
    return int(PROCESS_LOOPS.snapshot().get(loop, {}).get("errors", 0))  # type: ignore[call-overload]


class FailsOnce:
    """Wraps a callable: the first call raises a bug-like error, later ones pass through."""

    def __init__(self, wrapped: Callable[..., Any]) -> None:
        self.wrapped = wrapped
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected: not a Redis error")
        return self.wrapped(*args, **kwargs)


# --- the helper itself -------------------------------------------------------------------------
def test_guard_logs_once_per_streak_counts_every_failure_and_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = LoopRegistry()
    guard = LoopGuard("demo", base_s=0.001, cap_s=0.002, registry=registry)
    stop = threading.Event()
    passes: list[int] = []

    def step() -> float:
        passes.append(1)
        if len(passes) <= 3 or len(passes) == 5:
            raise ValueError(f"pass {len(passes)}")
        if len(passes) == 7:
            stop.set()
        return 0.0

    with caplog.at_level(logging.INFO, logger="metrics_store.loop.demo"):
        run_forever(guard, step, stop)
    assert len(passes) == 7  # it went on after every failure
    stats = registry.snapshot()["demo"]
    assert (stats["errors"], stats["streak"], stats["last_error"]) == (4, 0, "ValueError: pass 5")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one per streak (passes 1-3, pass 5), each with its traceback
    assert all(r.exc_info is not None for r in errors)
    assert sum("working again" in r.getMessage() for r in caplog.records) == 2


def test_an_outage_is_a_warning_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    guard = LoopGuard("outage-demo", registry=LoopRegistry())
    with caplog.at_level(logging.INFO, logger="metrics_store.loop.outage-demo"):
        for _ in range(3):
            guard.failed(redis.ConnectionError("refused"))
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None


# --- the collector's flusher, and /health --------------------------------------------------------
def test_flusher_survives_a_bug_and_health_shows_it(settings: Settings) -> None:
    collector = MetricsCollector(settings)
    try:
        collector.flush()
        before = errors_of("collector-flusher")
        [encoder] = collector._flusher._encoders  # one shard: single Redis
        encoder.encode = FailsOnce(encoder.encode)  # type: ignore[method-assign]
        for i in range(5):
            collector.record_query("Q2", 10.0 + i, 5, 5.0)
        collector.flush(timeout_s=20)  # the batch in hand was kept and written on the retry
        assert collector.written_events == 5
        assert errors_of("collector-flusher") == before + 1
        with TestClient(create_app(settings, SystemClock())) as client:
            wait_until(lambda: _flusher_errors_in_health(client) > before)
            health = client.get("/api/metrics/health").json()
        assert health["loopErrors"] >= 1
        [mine] = [p for p in health["processes"] if "collector" in p["roles"]]
        [flusher] = [loop for loop in mine["loops"] if loop["name"] == "collector-flusher"]
        assert flusher["lastError"] == "RuntimeError: injected: not a Redis error"
        assert flusher["failing"] is False  # it has written since
        assert Keys(settings.key_prefix).query_stream
        stream_len = redis.Redis.from_url(settings.redis.url).xlen(
            Keys(settings.key_prefix).query_stream
        )
        assert stream_len == 5
    finally:
        collector.close()


def _flusher_errors_in_health(client: TestClient) -> int:
    for process in client.get("/api/metrics/health").json()["processes"]:
        for loop in process["loops"]:
            if loop["name"] == "collector-flusher":
                return int(loop["errors"])
    return 0


# --- the API's loops: ticker, relay, replica heartbeat --------------------------------------------
class FlakyReader(MetricsReader):
    failures = 0

    async def update(self, now_s: float | None = None) -> MetricsUpdate:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("injected: not a Redis error")
        return await super().update(now_s)


def test_ticker_survives_a_failed_tick(settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    before = errors_of("live-ticker")

    async def scenario() -> bytes | None:
        client = aioredis.Redis.from_url(settings.redis.url)
        reader = FlakyReader(client, settings, SystemClock())
        ticker = Ticker(client, reader, LiveStore(client, settings), SystemClock(), "replica-x")
        task = asyncio.create_task(ticker.run())
        try:
            published = "a tick after the failed one"
            await wait_until_async(lambda: client.exists(keys.latest_update), 10, published)
            latest: bytes | None = await client.get(keys.latest_update)
            return latest
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()

    assert asyncio.run(scenario()) is not None  # a later tick was published
    assert errors_of("live-ticker") == before + 1


class FlakyHub(ClientHub):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[Frame] = []

    def publish(self, frame: Frame) -> None:
        self.published.append(frame)
        if len(self.published) == 1:
            raise RuntimeError("injected: not a Redis error")


def test_relay_resubscribes_after_a_bug(settings: Settings) -> None:
    before = errors_of("live-relay")

    async def scenario() -> int:
        client = aioredis.Redis.from_url(settings.redis.url)
        live = LiveStore(client, settings)
        hub = FlakyHub()
        task = asyncio.create_task(Relay(live, hub).run())
        sent = 0

        async def relayed_three() -> bool:
            """Publish one more update; whether the hub has had three."""
            nonlocal sent
            sent += 1
            update = f'{{"type": "metrics_update", "timestamp": "t{sent:04d}"}}'
            await live.publish_update(update.encode())
            return len(hub.published) >= 3

        try:
            await wait_until_async(relayed_three, 10, "three updates relayed")
            return len(hub.published)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()

    assert asyncio.run(scenario()) >= 3  # relayed again after the failed one
    assert errors_of("live-relay") == before + 1


def test_replica_heartbeat_survives_a_bug(settings: Settings) -> None:
    before = errors_of("live-heartbeat")
    keys = Keys(settings.key_prefix)
    check = redis.Redis.from_url(settings.redis.url)
    app = create_app(settings, SystemClock())
    with TestClient(app) as client:
        live = app.state.live
        live.registry.beat = _async_fails_once(live.registry.beat)
        wait_until(lambda: errors_of("live-heartbeat") == before + 1)
        check.delete(keys.replicas)
        wait_until(lambda: check.zcard(keys.replicas) == 1)  # beating again after the bug
        assert client.get("/api/metrics/health").json()["liveReplicas"] == 1
    assert errors_of("live-heartbeat") == before + 1
    check.close()


def _async_fails_once(wrapped: Callable[..., Any]) -> Callable[..., Any]:
    calls = 0

    async def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected: not a Redis error")
        return await wrapped(*args, **kwargs)

    return call


# --- the job worker -------------------------------------------------------------------------------
@pytest.fixture
def worker_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The worker's process-wide collector and demo backend, on this test's store."""
    monkeypatch.setenv("REDIS_URL", settings.redis.url)
    monkeypatch.setenv("METRICS_KEY_PREFIX", settings.key_prefix)
    get_settings.cache_clear()
    yield settings.replace(job_queues=[f"{settings.key_prefix}-jobs"])
    reset_metrics_collector()
    jobs.demo_backend.cache_clear()
    get_settings.cache_clear()


def test_job_worker_starts_a_new_loop_after_a_bug(
    worker_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rq import Queue

    connection = redis.Redis.from_url(worker_settings.redis.url)
    queue = Queue(worker_settings.sampler.job_queues[0], connection=connection)
    job = queue.enqueue("tests.rq_jobs.hold", str(tmp_path))  # returns at once: it exists
    before = errors_of("job-worker")
    monkeypatch.setattr(jobs, "_worker", FailsOnce(jobs._worker))
    jobs.run_worker(worker_settings, worker_settings.sampler.job_queues, burst=True)
    assert job.get_status(refresh=True) == "finished"  # served by the loop started after it
    assert errors_of("job-worker") == before + 1
    connection.close()
