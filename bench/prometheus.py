"""Scrape cost: `GET /metrics` p50/p99 over a real API process, with 100 nodes x 3 tiers of data,
and with 10^4 against 10^7 events recorded, both stores measured in the same run.

How 10^7 events are reached fast and honestly: /metrics reads the all-time totals, one sorted
set whose members are fixed by the labels (tier, error, complexity, fallback); the event volume
only changes their scores. Both stores get 10^4 synthetic events through the ingest script,
one by one. The big store then gets one more ingest call: the same kind of 10^4-event batch with
every counter increment multiplied (pre-summed, as a collector sums a batch before it writes),
so the totals hold 10^7 events. /metrics itself is asked to confirm the count.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.common import Summary, Table, private_redis, progress, write_results
from bench.load import load_events, synthetic_events
from bench.query import measure
from bench.servers import metrics_api
from metrics_store.live.snapshots import NodeSnapshot, SnapshotWriter
from metrics_store.record.batch import BatchEncoder, EncodedBatch
from metrics_store.record.events import Event
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings

NODES = 100
SAMPLE_EVENTS = 10_000
VOLUMES = (10_000, 10_000_000)
SPAN_S = 60.0  # the sample's events lie in the last minute: well inside the clock tolerance
P99_TARGET_MS = 100.0
RATIO_TARGET = 1.2


def seed_fleet(settings: Settings, nodes: int) -> None:
    """`nodes` live nodes, each with a snapshot and the availability of every tier."""
    client = redis.Redis.from_url(settings.redis.url)
    ingest = lua_script(INGEST)
    writer = SnapshotWriter(client, settings)
    keys = Keys(settings.key_prefix)
    now = time.time()
    for n in range(nodes):
        node = f"node-{n:03d}"
        # Availability as the node's collector sends it (the ingest script) ...
        encoder = BatchEncoder(settings.replace(node=node), keys)
        report: list[Event] = [("a", now, tier, 2, 3) for tier in settings.tiers]
        encoded = encoder.encode(report, uuid.uuid4().hex, now)
        ingest.run(client, encoded.keys, encoded.args)
        # ... then its snapshot through the sampler's writer; its stamps (Redis's clock) are
        # then moved an hour ahead, so the node stays live for the whole run without a sampler.
        ahead = writer.write(_snapshot(node, now)) + 3600
        stamped = _snapshot(node, now).model_copy(update={"stored_at": ahead})
        client.hset(keys.snapshots, node, stamped.model_dump_json())
        client.zadd(keys.live_nodes, {node: ahead})
    client.close()


def _snapshot(node: str, sampled_at: float) -> NodeSnapshot:
    return NodeSnapshot(
        node=node, sampled_at=sampled_at, cpu_percent=40.0, cpu_cores=16,
        memory_used_bytes=12 * 2**30, memory_total_bytes=32 * 2**30,
        vram_used_bytes=8 * 2**30, vram_total_bytes=24 * 2**30, disk_read_mbps=12.5,
        disk_write_mbps=3.0, net_rx_mbps=40.0, net_tx_mbps=35.0, faiss_index_bytes=2**30,
        redis_used_memory_bytes=2**28, jobs_active=2, jobs_queued=5,
    )  # fmt: skip


def scaled(batch: EncodedBatch, factor: int) -> EncodedBatch:
    """The batch with every counter increment (bucket and all-time) multiplied by `factor`."""
    args = list(batch.args)
    at = 1  # ingest.lua: the header in ARGV[1] names each section and its length, in order
    for name, length in json.loads(str(args[0]))["sections"]:
        if name == "increments":  # triples: KEYS index, member, amount
            for amount in range(at + 2, at + length, 3):
                args[amount] = float(args[amount]) * factor
        at += length
    return EncodedBatch(batch.keys, args)


def record(settings: Settings, events: int) -> None:
    """`events` events in the totals: a real sample, then the rest pre-summed (module doc)."""
    load_events(settings, SAMPLE_EVENTS, span_s=SPAN_S)
    factor, rest = divmod(events - SAMPLE_EVENTS, SAMPLE_EVENTS)
    if factor == 0:
        return
    assert rest == 0, "volumes are multiples of the sample"
    client = redis.Redis.from_url(settings.redis.url)
    now = time.time()
    sample = synthetic_events(SAMPLE_EVENTS, now - SPAN_S, SPAN_S, seed=7)
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    batch = scaled(encoder.encode(sample, uuid.uuid4().hex, now), factor)
    lua_script(INGEST).run(client, batch.keys, batch.args)
    client.close()


def events_seen(base_url: str) -> tuple[float, int, int]:
    """(queries + routing decisions in the counters, nodes, bytes) as one scrape shows them."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    counted, nodes = 0.0, set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("llm_queries_total", "llm_routing_decisions_total"):
                counted += sample.value
            if "node" in sample.labels and sample.name.startswith("llm_node_"):
                nodes.add(sample.labels["node"])
    return counted, len(nodes), len(text.encode())


def run(full: bool) -> dict[str, Any]:
    duration_s, runs = (3.0, 5) if full else (2.0, 3)
    figures: dict[int, dict[str, Summary]] = {}
    seen: dict[int, tuple[float, int, int]] = {}
    with private_redis() as server:
        stores = {
            v: Settings(redis_url=server.url, key_prefix=f"p{uuid.uuid4().hex[:6]}")
            for v in VOLUMES
        }
        for volume, settings in stores.items():
            progress(f"seeding {NODES} nodes x {len(settings.tiers)} tiers, {volume:,} events")
            seed_fleet(settings, NODES)
            record(settings, volume)
        with (
            metrics_api(server.url, stores[VOLUMES[0]].key_prefix) as few,
            metrics_api(server.url, stores[VOLUMES[1]].key_prefix) as many,
        ):
            apis = dict(zip(VOLUMES, (few, many), strict=True))
            for volume, base in apis.items():
                seen[volume] = events_seen(base)
            # Interleaved, one run at a time: both stores see the same moments of a shared host.
            samples: dict[int, list[dict[str, Summary]]] = {v: [] for v in VOLUMES}
            for i in range(runs):
                for volume, base in apis.items():
                    progress(f"run {i + 1}/{runs}: /metrics with {volume:,} events")
                    samples[volume].append(measure(f"{base}/metrics", 1, duration_s, 1))
    for volume, runs_of in samples.items():
        figures[volume] = {
            "p50_ms": Summary.of([r["p50_ms"].median for r in runs_of]),
            "p99_ms": Summary.of([r["p99_ms"].median for r in runs_of]),
        }
    print(report(figures, seen).render())
    write_results("prometheus", {"figures": figures, "seen": seen, "nodes": NODES})
    return {"figures": figures, "seen": seen}


def report(
    figures: dict[int, dict[str, Summary]], seen: dict[int, tuple[float, int, int]]
) -> Table:
    table = Table(
        f"/metrics scrape cost, {NODES} nodes x 3 tiers (median [min-max]; concurrency 1)",
        ["events", "seen by /metrics", "nodes", "bytes", "p50 ms", "p99 ms", "p99 target"],
    )
    for volume in VOLUMES:
        counted, nodes, size = seen[volume]
        p99 = figures[volume]["p99_ms"]
        verdict = "met" if p99.median < P99_TARGET_MS else "NOT met"
        table.add(f"{volume:,}", f"{counted:,.0f}", nodes, f"{size:,}",
                  figures[volume]["p50_ms"].show(2), p99.show(2),
                  f"< {P99_TARGET_MS:.0f}: {verdict}")  # fmt: skip
    low, high = figures[VOLUMES[0]], figures[VOLUMES[1]]
    p50_ratio, p99_ratio = (high[n].median / low[n].median for n in ("p50_ms", "p99_ms"))
    verdict = "met" if max(p50_ratio, p99_ratio) <= RATIO_TARGET else "NOT met"
    table.add("ratio", "10^7 / 10^4", "", "", f"{p50_ratio:.2f}", f"{p99_ratio:.2f}",
              f"<= {RATIO_TARGET}: {verdict}")  # fmt: skip
    return table
