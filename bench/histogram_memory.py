"""Memory of the latency histograms: bytes per (figure, tier, bucket) at realistic spreads, per
bucket level, and the whole store at 1,000 queries/s with 7 days of history, extrapolated.

`python -m bench.histogram_memory [--minutes 10] [--rate 1000]`: records `rate` queries/s for
`minutes` minutes (demo-like spreads: log-normal latency with a slow tail, TTFT, heavy-tailed
queue time, TPOT) through the real encoder and ingest script into a private Redis, then reads
MEMORY USAGE of every histogram key.
"""

from __future__ import annotations

import argparse
import math
import random
import uuid
from collections import defaultdict
from typing import Any

import redis

from bench.common import Table, private_redis, progress, write_results
from metrics_store.buckets import bucket_levels
from metrics_store.record.batch import BatchEncoder
from metrics_store.record.events import QueryEvent
from metrics_store.redis.keys import FIGURES, Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings

TIERS = ("Q2", "Q3", "Q4")
WEEK_S = 7 * 86_400


def realistic_query(rng: random.Random, ts: float, tier: int) -> QueryEvent:
    """One query shaped like the demo's: slower tiers generate more tokens, slower."""
    tokens = max(2, int(rng.gauss(200 * (tier + 1), 50 * (tier + 1))))
    tpot_ms = rng.lognormvariate(math.log(15.0 * (tier + 1)), 0.25)
    queue_ms = min(30_000.0, rng.lognormvariate(1.5, 1.3))
    prefill_ms = rng.lognormvariate(math.log(120.0 * (tier + 1)), 0.5)
    ttft_ms = queue_ms + prefill_ms
    latency_ms = ttft_ms + tpot_ms * (tokens - 1)
    if rng.random() < 0.01:  # a slow tail: retries, long prompts
        latency_ms *= rng.uniform(2, 10)
    generation_ms = latency_ms - queue_ms
    return ("q", ts, TIERS[tier], latency_ms, tokens, generation_ms, False, ttft_ms, queue_ms)


def record(settings: Settings, minutes: int, rate: int, start_s: float) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    script = lua_script(INGEST)
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    rng = random.Random(14)
    batch_events = 1000
    for second in range(minutes * 60):
        ts = start_s + second
        events = [realistic_query(rng, ts + i / rate, i % 3) for i in range(rate)]
        for i in range(0, rate, batch_events):
            encoded = encoder.encode(events[i : i + batch_events], uuid.uuid4().hex, ts)
            script.run(client, encoded.keys, encoded.args)
    client.close()


def measure(minutes: int, rate: int) -> dict[str, Any]:
    with private_redis() as server:
        settings = Settings(
            redis_url=server.url, key_prefix=f"h{uuid.uuid4().hex[:6]}", clock_skew_tolerance_s=0
        )
        start = 1_700_000_400.0  # a whole hour's start: the minutes fill one hour bucket
        progress(f"{rate} queries/s for {minutes} min")
        record(settings, minutes, rate, start)
        client = redis.Redis.from_url(server.url)
        by_level: dict[int, list[tuple[int, int]]] = defaultdict(list)  # size -> (bytes, bins)
        encodings: dict[str, int] = defaultdict(int)
        for raw in client.scan_iter(match=f"{{{settings.key_prefix}}}:h:*", count=1000):
            size = int(raw.decode().rsplit(":", 2)[1].rstrip("s"))
            usage = int(client.memory_usage(raw, samples=0) or 0)
            by_level[size].append((usage, int(client.hlen(raw)) - 1))
            encodings[client.object("encoding", raw).decode()] += 1
        client.close()
    return {"by_level": dict(by_level), "encodings": dict(encodings), "settings": settings}


def extrapolate(by_level: dict[int, list[tuple[int, int]]], settings: Settings) -> Table:
    table = Table(
        "Latency histograms: bytes per (figure, tier, bucket), and 7 days at the measured rate",
        ["bucket", "keys kept", "bytes/key (mean [max])", "bins (mean [max])", "MiB kept"],
    )
    levels = bucket_levels(
        settings.retention.bucket_s,
        settings.retention.rollup_s,
        settings.retention.retention_s,
        settings.retention.history_s,
        settings.slo.history_s,
    )
    total = 0.0
    histograms = len(FIGURES) * len(TIERS)
    for level in levels:
        found = by_level.get(level.size_s, [])
        if not found:
            continue
        mean_bytes = sum(b for b, _ in found) / len(found)
        kept = histograms * math.ceil((level.retention_s + level.size_s) / level.size_s)
        total += kept * mean_bytes
        table.add(
            f"{level.size_s} s",
            f"{kept:,}",
            f"{mean_bytes:,.0f} [{max(b for b, _ in found):,}]",
            f"{sum(n for _, n in found) / len(found):.0f} [{max(n for _, n in found)}]",
            f"{kept * mean_bytes / 2**20:.1f}",
        )
    table.add("all levels", "", "", "", f"{total / 2**20:.1f}")
    return table


def run(full: bool) -> dict[str, Any]:
    minutes, rate = (60, 1000) if full else (10, 1000)
    found = measure(minutes, rate)
    table = extrapolate(found["by_level"], found["settings"])
    print(table.render())
    print(f"  encodings: {found['encodings']}")
    results = {"by_level": {str(k): v for k, v in found["by_level"].items()},
               "encodings": found["encodings"], "table": table.rows}  # fmt: skip
    write_results("histogram_memory", results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="a whole hour (fills an hour bucket)")
    run(parser.parse_args().full)
