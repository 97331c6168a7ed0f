"""Redis cost per answer: Redis's own CPU (INFO cpu, main thread) per request of every endpoint
and window, on the realistic store (bench/realistic_store.py), at rest and with a fresh write
before every request; and the live tick's Redis CPU per second.

Method: one API replica (a child process) on a private redis-server. Per endpoint, after one
warm-up request, `requests` sequential requests; Redis's main-thread CPU over them, less the
background (the replica's beat and its live tick, measured over an idle stretch in the same
run), divided by the requests; and, beside it, Redis's time in commands (INFO commandstats)
the same way, which leaves out the system calls of the round trips. In the fresh-write mode
one query is recorded and flushed before each request, and the cost of those writes alone
(measured the same way) is taken out.
The live tick's cost is the background with the replica running less the background without.

Then REST req/s at concurrency 16 (wrk) of every endpoint against the one-GET endpoint of a
bare FastAPI app on the same Redis, in the same run: at rest, and while two collector
processes ingest continuously (RATE_PER_PROCESS queries a second each, with TTFT and queue
time, flushed by their collectors as in production).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import redis

from bench.common import Table, private_redis, progress, write_results
from bench.realistic_store import load_realistic_store
from bench.servers import baseline_api, metrics_api, pid_listening
from bench.wrk import run_wrk
from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings

PATHS = (
    ("/api/metrics/queries", ""),
    ("/api/metrics/tiers", ""),
    ("/api/metrics/routing", ""),
    ("/api/metrics/resources", ""),
    ("/api/metrics/latency", ""),
    ("/metrics", ""),
    ("/api/metrics/queries", "24h"),
    ("/api/metrics/tiers", "24h"),
    ("/api/metrics/latency", "24h"),
    ("/api/metrics/queries", "7d"),
    ("/api/metrics/tiers", "7d"),
    ("/api/metrics/latency", "7d"),
)
IDLE_S = 4.0
RATE_PER_PROCESS = 1_000
INGESTERS = 2
BOUND_MS = 0.25  # issue 20: every answer, at most this much of Redis's CPU


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys_main_thread"]) + float(info["used_cpu_user_main_thread"])


def redis_command_s(client: redis.Redis) -> float:
    """Redis's own time in commands (INFO commandstats), less INFO's and CONFIG's."""
    stats = client.info("commandstats")
    return sum(v["usec"] for k, v in stats.items() if "info" not in k and "config" not in k) / 1e6


class CpuMeter:
    """Redis's main-thread CPU (or, with `reading`, its time in commands) over a stretch,
    less a background rate (s per s)."""

    def __init__(
        self,
        client: redis.Redis,
        background_per_s: float = 0.0,
        reading: Callable[[redis.Redis], float] = redis_cpu_s,
    ) -> None:
        self._client = client
        self.background_per_s = background_per_s
        self._reading = reading

    def over(self, action: Callable[[], None]) -> float:
        """Redis seconds that `action` cost, the background taken out."""
        cpu0, t0 = self._reading(self._client), time.monotonic()
        action()
        cpu1, t1 = self._reading(self._client), time.monotonic()
        return max(0.0, (cpu1 - cpu0) - self.background_per_s * (t1 - t0))

    def idle_rate(self, seconds: float) -> float:
        cpu0, t0 = self._reading(self._client), time.monotonic()
        time.sleep(seconds)
        return (self._reading(self._client) - cpu0) / (time.monotonic() - t0)


def per_answer_ms(
    meter: CpuMeter, http: httpx.Client, url: str, requests: int, write: Callable[[], None] | None
) -> float:
    """Redis's cost per answer (ms), by `meter`; with `write`, the writes' own cost taken out."""
    http.get(url).raise_for_status()  # warm-up: the replica's first read of these keys

    def answers() -> None:
        for _ in range(requests):
            if write is not None:
                write()
            http.get(url).raise_for_status()

    def writes_alone() -> None:
        for _ in range(requests):
            if write is not None:
                write()

    spent = meter.over(answers)
    if write is not None:
        spent -= meter.over(writes_alone)
    return max(0.0, spent) / requests * 1000


def _ingest_forever(url: str, prefix: str, rate: int) -> None:
    """A collector process recording `rate` queries a second until terminated."""
    collector = MetricsCollector(Settings(redis_url=url, key_prefix=prefix))
    started = time.monotonic()
    sent = 0
    while True:
        due = int((time.monotonic() - started) * rate)
        for _ in range(due - sent):
            collector.record_query("Q3", 812.0, 120, 700.0, ttft_ms=90.0, queue_time_ms=4.0)
        sent = due
        time.sleep(0.01)


@contextmanager
def ingesting(url: str, prefix: str) -> Iterator[None]:
    ctx = multiprocessing.get_context("spawn")
    processes = [
        ctx.Process(target=_ingest_forever, args=(url, prefix, RATE_PER_PROCESS), daemon=True)
        for _ in range(INGESTERS)
    ]
    for process in processes:
        process.start()
    try:
        time.sleep(2)  # their first flushes land
        yield
    finally:
        for process in processes:
            process.terminate()
            process.join(10)


def rest_ratios(api: str, base: str, duration_s: float) -> dict[str, float]:
    """req/s @16 of each endpoint / the one-GET endpoint's, measured right after it."""
    ratios: dict[str, float] = {}
    for path, window in PATHS:
        name = path + (f"?window={window}" if window else "")
        one_get = run_wrk(f"{base}/get", 16, duration_s).requests_per_s
        endpoint = run_wrk(api + name, 16, duration_s).requests_per_s
        ratios[name] = endpoint / one_get
    return ratios


def _rss_mb(base_url: str) -> float:
    import psutil

    pid = pid_listening(base_url)
    return psutil.Process(pid).memory_info().rss / 2**20 if pid else float("nan")


def run(full: bool) -> None:
    requests = 400 if full else 100
    per_point = 300
    figures: dict[str, Any] = {}
    with private_redis() as server:
        prefix = f"b{uuid.uuid4().hex[:6]}"
        settings = Settings(redis_url=server.url, key_prefix=prefix, clock_skew_tolerance_s=0)
        progress("writing the realistic store (7 days, every bucket)")
        figures["events"] = load_realistic_store(settings, per_point)
        client = redis.Redis.from_url(server.url)
        figures["redis_memory_mb"] = client.info("memory")["used_memory"] / 2**20
        quiet = CpuMeter(client).idle_rate(IDLE_S)
        collector = MetricsCollector(Settings(redis_url=server.url, key_prefix=prefix))

        def write() -> None:
            collector.record_query("Q3", 812.0, 120, 700.0, ttft_ms=90.0, queue_time_ms=4.0)
            collector.flush()

        with metrics_api(server.url, prefix) as api, httpx.Client(timeout=30) as http:
            background = CpuMeter(client).idle_rate(IDLE_S)
            figures["live_tick_ms_per_s"] = max(0.0, background - quiet) * 1000
            in_commands = CpuMeter(client, reading=redis_command_s)
            tick_commands = in_commands.idle_rate(IDLE_S)
            figures["live_tick_command_ms_per_s"] = tick_commands * 1000
            meter = CpuMeter(client, background)
            commands = CpuMeter(client, tick_commands, reading=redis_command_s)
            for path, window in PATHS:
                url = api + path + (f"?window={window}" if window else "")
                name = path + (f"?window={window}" if window else "")
                progress(f"Redis CPU per answer: {name}")
                figures[f"{name} rest"] = per_answer_ms(meter, http, url, requests, None)
                figures[f"{name} fresh"] = per_answer_ms(meter, http, url, requests, write)
                figures[f"{name} fresh commands"] = per_answer_ms(
                    commands, http, url, requests, write
                )
            figures["api_rss_mb"] = _rss_mb(api)  # its copy of every window's buckets
            duration_s = 5.0 if full else 3.0
            with baseline_api(server.url) as base:
                progress("REST req/s @16 against one GET, at rest")
                figures["rest_at_rest"] = rest_ratios(api, base, duration_s)
                progress(f"REST req/s @16 against one GET, {INGESTERS} collectors ingesting")
                with ingesting(server.url, prefix):
                    figures["rest_under_ingest"] = rest_ratios(api, base, duration_s)
        collector.close()
        client.close()
    table = Table(
        f"Redis CPU per answer, realistic store ({figures['events']:,} events; "
        f"bound {BOUND_MS} ms)",
        ["endpoint", "at rest (ms)", "fresh write before each (ms)",
         "fresh: in commands (ms)", "req/s ratio @16", "ratio, ingesting"],
    )  # fmt: skip
    for path, window in PATHS:
        name = path + (f"?window={window}" if window else "")
        table.add(
            name,
            f"{figures[name + ' rest']:.3f}",
            f"{figures[name + ' fresh']:.3f}",
            f"{figures[name + ' fresh commands']:.3f}",
            f"{figures['rest_at_rest'][name]:.2f}",
            f"{figures['rest_under_ingest'][name]:.2f}",
        )
    tick, in_commands = figures["live_tick_ms_per_s"], figures["live_tick_command_ms_per_s"]
    table.add("live tick (ms of Redis per s)", f"{tick:.2f}", "", f"{in_commands:.2f}", "", "")
    write_results("redis_cost", figures)
    print(table.render())
    rss, redis_mb = figures["api_rss_mb"], figures["redis_memory_mb"]
    print(f"API replica's memory after every endpoint and window: {rss:.0f} MiB resident; "
          f"Redis: {redis_mb:.0f} MiB")  # fmt: skip
