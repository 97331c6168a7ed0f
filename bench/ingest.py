"""Ingest: the collector's sustained events/s against the raw batched-Lua baseline, and the
caller-side cost of record_query against prometheus_client's Histogram.observe(); then the
ingest call's format against the base commit's (bench/ingest_format.py)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from typing import Any

import psutil
import redis
import redis.asyncio as aioredis

from bench import ingest_format
from bench.common import Summary, Table, private_redis, progress, repeat, write_results
from metrics_store.errors import EventsLost
from metrics_store.read.reader import MetricsReader
from metrics_store.record.batch import BatchEncoder
from metrics_store.record.collector import MetricsCollector
from metrics_store.record.event_buffer import BufferPolicy
from metrics_store.record.events import QueryEvent
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings

TIERS = ("Q2", "Q3", "Q4")


def _settings(url: str, prefix: str) -> Settings:
    return Settings(redis_url=url, key_prefix=prefix, node="bench", buffer_max_events=10_000_000)


def _events(count: int, now: float) -> list[QueryEvent]:
    rng = random.Random(1)
    return [
        ("q", now, TIERS[i % 3], rng.uniform(100, 9000), rng.randint(1, 500),
         rng.uniform(50, 8000), i % 50 == 0, rng.uniform(20, 800), rng.uniform(0, 200))
        for i in range(count)
    ]  # fmt: skip


def raw_lua_rate(url: str, events: int, batch: int) -> float:
    """The same script and the same writes, batches pre-encoded: Redis alone sets the pace."""
    settings = _settings(url, f"raw{uuid.uuid4().hex[:8]}")
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    now = time.time()
    stream = _events(events, now)
    batches = [
        encoder.encode(list(stream[i : i + batch]), uuid.uuid4().hex, now)
        for i in range(0, events, batch)
    ]
    client = redis.Redis.from_url(url)
    script = lua_script(INGEST).bind(client)
    script(keys=batches[0].keys, args=batches[0].args)  # load the script outside the timing
    started = time.perf_counter()
    for encoded in batches[1:]:
        script(keys=encoded.keys, args=encoded.args)
    elapsed = time.perf_counter() - started
    client.close()
    return (events - batch) / elapsed


def collector_rate(url: str, events: int) -> float:
    """Record `events` queries through the collector and time until flush() returns."""
    rate, stored = recorded_and_stored(_settings(url, f"col{uuid.uuid4().hex[:8]}"), events)
    if stored != events:
        raise RuntimeError(f"{events - stored} of {events} events were not stored")
    return rate


def recorded_and_stored(settings: Settings, events: int) -> tuple[float, int]:
    """Record `events` (the baseline's, with TTFT and queue time) as fast as one thread can;
    events/s until flush(), and the events the store holds afterwards, read back through the
    API's reader (30-minute window)."""
    collector = MetricsCollector(settings)
    # The baseline's events, TTFT and queue time included: both write the same histogram bins.
    values = [event[2:] for event in _events(events, time.time())]
    record = collector.record_query
    started = time.perf_counter()
    for tier, latency, tokens, generation, error, ttft, queue in values:
        record(tier, latency, tokens, generation, error, ttft, queue)
    try:
        collector.flush()
    except EventsLost as lost:
        progress(f"  flush() owned up to {lost.lost:,} lost events")
    elapsed = time.perf_counter() - started
    collector.close()
    return events / elapsed, _stored_queries(settings)


def _stored_queries(settings: Settings) -> int:
    async def read() -> int:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            return (await MetricsReader(client, settings).queries()).totalQueries
        finally:
            await client.aclose()

    return asyncio.run(read())


def stored_share(url: str, events: int, policy: BufferPolicy) -> str:
    """Events stored / recorded for one thread at full speed, default buffer, `policy`."""
    settings = Settings(
        redis_url=url, key_prefix=f"pol{uuid.uuid4().hex[:8]}", buffer_full_policy=policy
    )
    _, stored = recorded_and_stored(settings, events)
    return f"{stored:,} / {events:,}"


def _collector_process(url: str, events: int, start_at: float, out: Any) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    out.put(collector_rate(url, events))


def parallel_collectors(url: str, processes: int, events: int) -> tuple[float, float, float]:
    """Total events/s of `processes` collectors started together, with Redis's CPU (% of one
    core) and the whole host's CPU (% of all cores) meanwhile."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 1.5
    workers = [ctx.Process(target=_collector_process, args=(url, events, start_at, results))
               for _ in range(processes)]  # fmt: skip
    for worker in workers:
        worker.start()
    redis_pid = int(redis.Redis.from_url(url).info("server")["process_id"])
    redis_proc = psutil.Process(redis_pid)
    while time.time() < start_at:
        time.sleep(0.01)
    cpu_before = sum(redis_proc.cpu_times()[:2])
    psutil.cpu_percent()  # starts the host-wide measurement
    started = time.perf_counter()
    rates = [results.get(timeout=300) for _ in workers]
    elapsed = time.perf_counter() - started
    redis_cpu = (sum(redis_proc.cpu_times()[:2]) - cpu_before) / elapsed * 100
    host_cpu = psutil.cpu_percent()
    for worker in workers:
        worker.join()
    # Each process timed itself; the cluster rate is all events over the slowest one's time.
    total = processes * events / max(events / rate for rate in rates)
    return total, redis_cpu, host_cpu


def caller_cost_ns(calls: int) -> tuple[dict[str, float], dict[str, float]]:
    """p50/p99 of one record_query call (with ttft_ms) and of one Histogram.observe call."""
    from prometheus_client import CollectorRegistry, Histogram

    histogram = Histogram("latency_ms", "latency", registry=CollectorRegistry())
    settings = _settings("redis://127.0.0.1:1/0", "cost")  # nothing is written: pure caller cost
    collector = MetricsCollector(settings.replace(buffer_max_events=calls + 10))
    record, observe, clock = collector.record_query, histogram.observe, time.perf_counter_ns
    ours, theirs = [], []
    for i in range(calls):
        latency = 100.0 + i % 900
        t0 = clock()
        record("Q2", latency, 128, 640.0, ttft_ms=latency / 4)
        t1 = clock()
        observe(latency)
        t2 = clock()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    collector.close(timeout_s=0)
    return _percentiles(ours), _percentiles(theirs)


def _percentiles(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": ordered[len(ordered) // 2], "p99": ordered[int(len(ordered) * 0.99)]}


def run(full: bool) -> dict[str, Any]:
    events = 400_000 if full else 100_000
    runs = 5 if full else 3
    table = Table(
        "Ingest (events/s; median [min-max])", ["measure", "value", "baseline", "ratio", "target"]
    )
    with private_redis() as server:
        progress(f"raw batched Lua, {events:,} events x {runs}")
        raw = repeat(runs, lambda: raw_lua_rate(server.url, events, 1000))
        progress(f"collector from 1 process, {events:,} events x {runs}")
        one = repeat(runs, lambda: collector_rate(server.url, events))
        progress(f"collector from 4 processes, {events:,} events each x {runs}")
        four_runs = [parallel_collectors(server.url, 4, events) for _ in range(runs)]
        burst = 400_000
        progress(f"stored / recorded, one thread, {burst:,} events, default buffer")
        dropping = stored_share(server.url, burst, "drop_oldest")
        blocking = stored_share(server.url, burst, "block")
    four = Summary.of([rate for rate, _, _ in four_runs])
    redis_cpu = Summary.of([cpu for _, cpu, _ in four_runs])
    host_cpu = Summary.of([cpu for _, _, cpu in four_runs])
    progress("caller cost, 200,000 calls")
    ours, prometheus = caller_cost_ns(200_000)
    table.add(
        "collector, 1 process", one.show(), raw.show(), f"{one.median / raw.median:.2f}", ">= 0.75"
    )
    table.add("collector, 4 processes", four.show(), one.show(), f"{four.median / one.median:.2f}",
              ">= 1.5 or Redis saturated")  # fmt: skip
    table.add("Redis CPU during 4 processes (%)", redis_cpu.show(), "100 = one core", "", "")
    cores = psutil.cpu_count()
    table.add(f"host CPU during 4 processes (% of {cores} cores)", host_cpu.show(), "", "", "")
    table.add(
        "record_query p50 (ns)",
        ours["p50"],
        prometheus["p50"],
        f"{ours['p50'] / prometheus['p50']:.2f}",
        "<= 2",
    )
    table.add(
        "record_query p99 (ns)",
        ours["p99"],
        prometheus["p99"],
        f"{ours['p99'] / prometheus['p99']:.2f}",
        "",
    )
    table.add("stored / recorded, 400k burst, drop_oldest", dropping, "", "", "owned by flush()")
    table.add("stored / recorded, 400k burst, block", blocking, "", "", "all")
    print(table.render())
    results = {
        "stored_drop_oldest": dropping,
        "stored_block": blocking,
        "raw_lua": raw,
        "collector_1": one,
        "collector_4": four,
        "redis_cpu_4": redis_cpu,
        "host_cpu_4": host_cpu,
        "record_query_ns": ours,
        "histogram_observe_ns": prometheus,
        "table": table.rows,
    }
    write_results("ingest", results)
    progress(f"the ingest call's format against {ingest_format.BASE}'s, interleaved")
    results["format"] = ingest_format.run(full)
    return results
