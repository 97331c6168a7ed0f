"""Redis Cluster: the same load on one primary (single mode) and on three (cluster mode),
measured in the same run, the two modes alternated.

- Ingest: events/s of COLLECTORS collector processes started together, with each
  redis-server's CPU (psutil) and its share of the writes (INFO commandstats, reset per run).
- Balance: max/min of per-primary write commands (the XADD/ZINCRBY/HINCRBY... the ingest
  script runs), target <= 1.2.
- Redis CPU-seconds per million events, all primaries together against the single server,
  target <= 1.2x.
- Each endpoint's p50 over sequential httpx requests, one API process per mode reading the
  events just ingested, target <= 2x.

The cluster has three primaries and no replicas (`--cluster-replicas 0`): replication is
replication's cost, measured in bench/ha.py, not a cluster's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from bench.common import Summary, Table, private_redis, progress, write_results
from bench.ingest import _events
from bench.servers import serve
from metrics_store.read.reader import MetricsReader
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.topology import async_client
from metrics_store.settings import Settings
from tests.waiting import wait_until
from workers.redis_process import RedisServerProcess, free_port

PRIMARIES = 3
COLLECTORS = 2  # one per core of the 2-core host; more only queue on the same cores
ENDPOINTS = ("queries", "tiers", "routing", "latency")
# The commands the ingest script runs per batch (metrics_store/record/ingest.lua): the writes.
WRITE_COMMANDS = ("xadd", "zincrby", "lpush", "hset", "hincrby", "hincrbyfloat", "zadd")


@contextmanager
def three_primaries(root: Path) -> Iterator[list[RedisServerProcess]]:
    """PRIMARIES cluster nodes, slots split evenly by `redis-cli --cluster create`."""
    nodes = [
        RedisServerProcess(
            root / f"node-{n}",
            extra_args=(
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                # The bus port defaults to port + 10000, past 65535 for a high free port.
                "--cluster-port", str(free_port()),
            ),
        )
        for n in range(PRIMARIES)
    ]  # fmt: skip
    try:
        for node in nodes:
            node.start()
        cli = shutil.which("redis-cli") or "redis-cli"
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        clients = [redis.Redis.from_url(node.url, decode_responses=True) for node in nodes]
        wait_until(
            lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in clients),
            30,
            "the cluster to be ok",
        )
        for client in clients:
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@dataclass
class Servers:
    """The redis-servers of one mode, with a client and a psutil handle for each."""

    urls: list[str]

    def __post_init__(self) -> None:
        self.clients = [redis.Redis.from_url(url, decode_responses=True) for url in self.urls]
        self.procs = [psutil.Process(int(c.info("server")["process_id"])) for c in self.clients]

    def reset_stats(self) -> None:
        for client in self.clients:
            client.config_resetstat()

    def cpu_s(self) -> list[float]:
        return [sum(proc.cpu_times()[:2]) for proc in self.procs]

    def writes(self) -> list[int]:
        """Write commands each server ran since reset_stats (scripts' commands count)."""
        counts = []
        for client in self.clients:
            stats = client.info("commandstats")
            counts.append(sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0))
                              for c in WRITE_COMMANDS))  # fmt: skip
        return counts

    def close(self) -> None:
        for client in self.clients:
            client.close()


@dataclass
class IngestRun:
    events_s: float
    cpu_s: list[float]  # per server
    writes: list[int]  # per server
    elapsed_s: float


def _settings(url: str, prefix: str, cluster: bool) -> Settings:
    return Settings(
        redis_url=url,
        redis_cluster=cluster,
        key_prefix=prefix,
        node=f"bench-{uuid.uuid4().hex[:6]}",
        buffer_max_events=10_000_000,
    )


def _collector_process(settings: Settings, events: int, start_at: float, out: Any) -> None:
    collector = MetricsCollector(settings)
    values = [event[2:] for event in _events(events, time.time())]
    record = collector.record_query
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.perf_counter()
    for tier, latency, tokens, generation, error, ttft, queue in values:
        record(tier, latency, tokens, generation, error, ttft, queue)
    collector.flush()
    out.put(time.perf_counter() - started)
    collector.close()


def ingest(servers: Servers, settings: Settings, events: int) -> IngestRun:
    """COLLECTORS processes of `events` each, started together; the store's total checked."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 2.0  # spawn and import time stay outside the measurement
    workers = [ctx.Process(target=_collector_process, args=(settings, events, start_at, results))
               for _ in range(COLLECTORS)]  # fmt: skip
    for worker in workers:
        worker.start()
    while time.time() < start_at:
        time.sleep(0.01)
    servers.reset_stats()
    cpu_before = servers.cpu_s()
    elapsed = max(results.get(timeout=300) for _ in workers)
    cpu = [after - before for after, before in zip(servers.cpu_s(), cpu_before, strict=True)]
    for worker in workers:
        worker.join()
    stored = _stored(settings)
    if stored < COLLECTORS * events:
        raise RuntimeError(f"{COLLECTORS * events - stored} events were not stored")
    return IngestRun(COLLECTORS * events / elapsed, cpu, servers.writes(), elapsed)


def _stored(settings: Settings) -> int:
    async def read() -> int:
        client = async_client(settings)
        try:
            return (await MetricsReader(client, settings).queries()).totalQueries
        finally:
            await client.aclose()

    return asyncio.run(read())


@contextmanager
def api(settings: Settings, jobs_url: str) -> Iterator[str]:
    env = {
        "REDIS_URL": settings.redis.url,
        "METRICS_KEY_PREFIX": settings.key_prefix,
        "METRICS_REDIS_CLUSTER": "true" if settings.redis.cluster else "false",
        "METRICS_JOBS_REDIS_URL": jobs_url,  # rq has no cluster support
    }
    with serve(["workers.cli", "api"], env, "/api/metrics/queries") as base:
        yield base


def p50_ms(client: httpx.Client, urls: dict[str, str], requests: int) -> dict[str, float]:
    """Each URL's median time, the URLs' requests interleaved so both see the same noise."""
    for url in urls.values():
        for _ in range(5):  # warm connections and caches outside the timing
            client.get(url).raise_for_status()
    times: dict[str, list[float]] = {mode: [] for mode in urls}
    for _ in range(requests):
        for mode, url in urls.items():
            started = time.perf_counter()
            client.get(url).raise_for_status()
            times[mode].append((time.perf_counter() - started) * 1000)
    return {mode: statistics.median(values) for mode, values in times.items()}


def run(full: bool) -> dict[str, Any]:
    events = 200_000 if full else 50_000  # per collector process
    runs = 3 if full else 2
    requests = 200 if full else 40
    single_runs: list[IngestRun] = []
    cluster_runs: list[IngestRun] = []
    prefix = f"cl{uuid.uuid4().hex[:6]}"
    with (
        private_redis() as single,
        tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp,
        three_primaries(Path(tmp)) as nodes,
    ):
        one = Servers([single.url])
        three = Servers([node.url for node in nodes])
        single_settings = _settings(single.url, prefix, cluster=False)
        cluster_settings = _settings(nodes[0].url.rsplit("/", 1)[0], prefix, cluster=True)
        for n in range(runs):
            progress(f"ingest run {n + 1}/{runs}: {COLLECTORS} x {events:,} events, single")
            single_runs.append(ingest(one, single_settings, events))
            progress(f"ingest run {n + 1}/{runs}: {COLLECTORS} x {events:,} events, cluster")
            cluster_runs.append(ingest(three, cluster_settings, events))
        p50: dict[str, dict[str, float]] = {"single": {}, "cluster": {}}
        with (
            api(single_settings, single.url) as single_api,
            api(cluster_settings, single.url) as cluster_api,
            httpx.Client(timeout=30) as http,
        ):
            for name in ENDPOINTS:
                progress(f"/{name}: {requests} sequential requests per mode, interleaved")
                bases = {"single": single_api, "cluster": cluster_api}
                urls = {mode: f"{base}/api/metrics/{name}" for mode, base in bases.items()}
                for mode, ms in p50_ms(http, urls, requests).items():
                    p50[mode][name] = ms
        one.close()
        three.close()
    return report(single_runs, cluster_runs, p50, events)


def report(single_runs: list[IngestRun], cluster_runs: list[IngestRun],
           p50: dict[str, dict[str, float]], events: int) -> dict[str, Any]:  # fmt: skip
    total_events = COLLECTORS * events
    rate_1 = Summary.of([r.events_s for r in single_runs])
    rate_3 = Summary.of([r.events_s for r in cluster_runs])
    cpu_m_1 = Summary.of([sum(r.cpu_s) / total_events * 1e6 for r in single_runs])
    cpu_m_3 = Summary.of([sum(r.cpu_s) / total_events * 1e6 for r in cluster_runs])
    balance = Summary.of([max(r.writes) / max(1, min(r.writes)) for r in cluster_runs])
    table = Table(
        f"Redis Cluster, 3 primaries vs 1 (median [min-max] of {len(single_runs)} runs; "
        f"{COLLECTORS} collectors x {events:,} events)",
        ["measure", "cluster", "single", "ratio", "target"],
    )
    table.add("ingest events/s", rate_3.show(), rate_1.show(),
              f"{rate_3.median / rate_1.median:.2f}", "")  # fmt: skip
    for i in range(PRIMARIES):
        rates = [r.writes[i] / r.elapsed_s for r in cluster_runs]
        cores = [r.cpu_s[i] / r.elapsed_s * 100 for r in cluster_runs]
        table.add(f"primary {i + 1}: write commands/s, CPU % of a core",
                  f"{statistics.median(rates):,.0f}, {statistics.median(cores):.0f} %",
                  f"{statistics.median(r.writes[0] / r.elapsed_s for r in single_runs):,.0f}, "
                  f"{statistics.median(r.cpu_s[0] / r.elapsed_s * 100 for r in single_runs):.0f} %",
                  "", "")  # fmt: skip
    table.add("balance: max/min per-primary writes", balance.show(2), "", "", "<= 1.2")
    table.add("Redis CPU-s per million events", cpu_m_3.show(2), cpu_m_1.show(2),
              f"{cpu_m_3.median / cpu_m_1.median:.2f}", "<= 1.2")  # fmt: skip
    for name in ENDPOINTS:
        cluster_ms, single_ms = p50["cluster"][name], p50["single"][name]
        table.add(f"/{name} p50 ms (sequential)", f"{cluster_ms:.2f}", f"{single_ms:.2f}",
                  f"{cluster_ms / single_ms:.2f}", "<= 2")  # fmt: skip
    print(table.render())
    results = {
        "collectors": COLLECTORS,
        "events_per_collector": events,
        "single_runs": single_runs,
        "cluster_runs": cluster_runs,
        "events_s": {"single": rate_1, "cluster": rate_3},
        "cpu_s_per_million": {"single": cpu_m_1, "cluster": cpu_m_3},
        "balance": balance,
        "p50_ms": p50,
        "table": table.rows,
    }
    write_results("cluster", results)
    return results
