"""Known data for the dashboard: objectives, recorded events and two hand-written node snapshots.

Shared by the browser tests and scripts/screenshot.py, so the screenshot shows what is tested.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import redis.asyncio as aioredis

from metrics_store.clock import ManualClock
from metrics_store.live.snapshots import NodeSnapshot, StoredGpu
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.client import redis_now
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from metrics_store.slo.definitions import parse_objectives
from metrics_store.slo.store import save

GIB = 2**30
MIB = 2**20

# The API child must count these snapshots and heartbeats as live for the whole test, however
# long it runs: nothing refreshes them.
API_ENV = {"METRICS_NODE_TTL_S": "3600", "METRICS_NODE_PRUNE_AFTER_S": "7200"}


def _record_traffic(collector: MetricsCollector, clock: ManualClock, start: float) -> None:
    """Queries spread over the chart's 18 ten-second buckets, with a rising then falling rate."""
    for bucket in range(18):
        per_bucket = 2 + (bucket * 7) % 11
        for i in range(per_bucket):
            clock.set(start + bucket * 10 + i * 10 / per_bucket)
            tier = ("Q2", "Q2", "Q2", "Q3", "Q4")[(bucket + i) % 5]
            latency_ms = {"Q2": 400.0, "Q3": 1300.0, "Q4": 3900.0}[tier] + 15.0 * ((i * 13) % 20)
            tokens = {"Q2": 96, "Q3": 160, "Q4": 240}[tier] + (i * 7) % 40
            collector.record_query(
                tier,
                latency_ms,
                tokens,
                latency_ms * 0.8,
                is_error=i == 7,
                ttft_ms=latency_ms * 0.2,
                queue_time_ms=5.0 + i,
            )


# Older traffic, inside 6 hours and outside 30 minutes: a slow hour of Q2 and Q3, so that a
# longer window shows more queries and higher percentiles than the live 30-minute view.
OLD_TRAFFIC_AGO_S = 3 * 3600
OLD_QUERIES = 60


def _record_old_traffic(settings: Settings, now: float) -> None:
    # A tolerance of 0 trusts this collector's clock: the store takes a backfill hours old.
    backfill = settings.replace(clock_skew_tolerance_s=0.0)
    clock = ManualClock(now - OLD_TRAFFIC_AGO_S)
    collector = MetricsCollector(backfill, clock=clock)
    try:
        for i in range(OLD_QUERIES):
            clock.set(now - OLD_TRAFFIC_AGO_S + i * 30)
            tier = ("Q2", "Q3")[i % 2]
            latency_ms = {"Q2": 2500.0, "Q3": 6000.0}[tier] + 40.0 * (i % 17)
            collector.record_query(
                tier, latency_ms, 120, latency_ms * 0.7, ttft_ms=latency_ms * 0.3
            )
        collector.flush(timeout_s=10)
    finally:
        collector.close()


def _record_routing(collector: MetricsCollector) -> None:
    plan = [("SIMPLE", "Q2", 40), ("SIMPLE", "Q3", 6), ("MODERATE", "Q2", 9),
            ("MODERATE", "Q3", 25), ("MODERATE", "Q4", 3), ("COMPLEX", "Q3", 7),
            ("COMPLEX", "Q4", 18)]  # fmt: skip
    base_score = {"SIMPLE": 1.5, "MODERATE": 5.0, "COMPLEX": 8.5}
    for complexity, tier, count in plan:
        for i in range(count):
            score = base_score[complexity] + (i % 5) * 0.25
            collector.record_routing_decision(
                complexity, tier, score, 8.0 + i % 9, is_fallback=i % 12 == 11
            )


def record_events(settings: Settings) -> None:
    """Queries over the last three minutes (and 3 h ago), routing decisions, availability."""
    now = time.time()
    _record_old_traffic(settings, now)
    # Every event strictly in the past: one stamped ahead of the clock would join the totals
    # only once its bucket begins, and the numbers would change under the tests' eyes.
    start = now - 18 * 10 - 5
    clock = ManualClock(start)
    collector = MetricsCollector(settings, clock=clock)
    try:
        _record_traffic(collector, clock, start)
        clock.set(now)
        _record_routing(collector)
        collector.update_model_availability("Q2", 3, 3)
        collector.update_model_availability("Q3", 1, 2)
        collector.update_model_availability("Q4", 0, 1)
        collector.flush(timeout_s=10)
    finally:
        collector.close()
    # Availability counts only live nodes; beat for this one rather than wait on the flusher.
    client = redis.Redis.from_url(settings.redis.url)
    try:
        client.zadd(Keys(settings.key_prefix).live_nodes, {settings.node: redis_now(client)})
    finally:
        client.close()


NODES = ("gpu-a", "gpu-b")  # the node selector lists them in this order
# Per-node figures; sizes chosen so that no displayed value sits on a rounding tie.
NODE_FIGURES: dict[str, dict[str, Any]] = {
    "gpu-a": {"cpu_percent": 62.5, "cpu_cores": 16, "memory_used_bytes": 24 * GIB,
              "memory_total_bytes": 64 * GIB, "vram_used_bytes": 17 * GIB,
              "faiss_index_bytes": 500 * MIB, "disk_read_mbps": 15.3, "disk_write_mbps": 8.7,
              "net_rx_mbps": 2.5, "net_tx_mbps": 1.8},
    "gpu-b": {"cpu_percent": 31.25, "cpu_cores": 8, "memory_used_bytes": 10 * GIB,
              "memory_total_bytes": 32 * GIB, "vram_used_bytes": 6 * GIB,
              "faiss_index_bytes": 2 * GIB + 300 * MIB, "disk_read_mbps": 1.2,
              "disk_write_mbps": 0.4, "net_rx_mbps": 0.75, "net_tx_mbps": 0.25},
}  # fmt: skip
# What every node reports alike (the cluster-wide values).
CLUSTER_FIGURES: dict[str, Any] = {
    "vram_total_bytes": 24 * GIB,
    "redis_used_memory_bytes": 3 * MIB + 300 * 1024,
    "jobs_active": 4,
    "jobs_queued": 2,
}


def node_snapshots(sampled_at: float) -> list[NodeSnapshot]:
    """One snapshot per node in NODES, as its sampler would have taken it at `sampled_at`."""
    return [
        NodeSnapshot(
            node=node, sampled_at=sampled_at, gpus=[_gpu(figures)], **CLUSTER_FIGURES, **figures
        )
        for node, figures in NODE_FIGURES.items()
    ]


def _gpu(figures: dict[str, Any]) -> StoredGpu:
    used, total = figures["vram_used_bytes"], CLUSTER_FIGURES["vram_total_bytes"]
    return StoredGpu(index=0, name="NVIDIA L4", memory_used_bytes=used, memory_total_bytes=total)


def write_snapshots(redis_url: str, prefix: str) -> None:
    """What each node's sampler would have written a moment ago (stamped by Redis's clock)."""
    client = redis.Redis.from_url(redis_url)
    try:
        stored_at = redis_now(client)
        for snapshot in node_snapshots(time.time()):
            stamped = snapshot.model_copy(update={"stored_at": stored_at})
            client.hset(Keys(prefix).snapshots, snapshot.node, stamped.model_dump_json())
    finally:
        client.close()


# Objectives whose states differ on the seeded traffic: Q4's queries (3.9 s and more) all miss
# their 1 s (page: every window burns 100x); the slow Q2 hour 3 hours ago spends Q2's latency
# budget over 3 days and 6 hours but not lately (ticket); Q2's errors stay within half its
# queries (ok). No objective covers Q3: its goodput is unknown (null), not 0.
OBJECTIVES: dict[str, Any] = {
    "objectives": [
        {"name": "q4-latency", "tier": "Q4", "kind": "latency", "thresholdMs": 1000,
         "target": 0.99},
        {"name": "q2-latency", "tier": "Q2", "kind": "latency", "thresholdMs": 2000,
         "target": 0.9},
        {"name": "q2-errors", "tier": "Q2", "kind": "errors", "target": 0.5},
    ]
}  # fmt: skip


def define_objectives(settings: Settings) -> None:
    """Store OBJECTIVES, as PUT /api/metrics/slo/definitions would, before any query is
    written: the collectors judge each query for goodput as they write it."""
    objectives = parse_objectives(OBJECTIVES, settings.tiers, settings.slo.history_s)

    async def store() -> None:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            await save(client, settings, objectives)
        finally:
            await client.aclose()

    # In a thread of its own: the caller may run an event loop already (Playwright's sync API).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, store()).result()


def seed(settings: Settings) -> None:
    define_objectives(settings)
    record_events(settings)
    write_snapshots(settings.redis.url, settings.key_prefix)
