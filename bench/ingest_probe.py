"""One side of bench/ingest_format.py: the ingest call of whichever `metrics_store` is on the
path, measured on a given Redis; prints one JSON line.

    PYTHONPATH=<tree> python bench/ingest_probe.py REDIS_URL EVENTS BATCH

Run by path, in a child process, so the `metrics_store` imported is the tree under test (the
base commit's or this one): it uses only what both trees share (BatchEncoder, the ingest
script, MetricsCollector, the reader), so the same code measures both.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from typing import Any

import redis
import redis.asyncio as aioredis

import metrics_store
from metrics_store.read.reader import MetricsReader
from metrics_store.record.batch import BatchEncoder, EncodedBatch
from metrics_store.record.collector import MetricsCollector
from metrics_store.record.events import Event
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings

TIERS = ("Q2", "Q3", "Q4")
COMPLEXITIES = ("SIMPLE", "MODERATE", "COMPLEX")


def events(count: int, now: float) -> list[Event]:
    """Four queries (TTFT and queue time included) to one routing decision; seeded."""
    rng = random.Random(1)
    out: list[Event] = []
    for i in range(count):
        tier = TIERS[i % 3]
        if i % 5 == 4:
            out.append(("r", now, COMPLEXITIES[i % 3], tier, rng.uniform(0, 1),
                        rng.uniform(0.1, 5), i % 40 == 4))  # fmt: skip
        else:
            out.append(("q", now, tier, rng.uniform(100, 9000), rng.randint(1, 500),
                        rng.uniform(50, 8000), i % 50 == 0, rng.uniform(20, 800),
                        rng.uniform(0, 200)))  # fmt: skip
    return out


def _settings(url: str) -> Settings:
    prefix = f"fmt{uuid.uuid4().hex[:8]}"
    return Settings(redis_url=url, key_prefix=prefix, node="bench", buffer_max_events=10_000_000)


def _redis_cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def encode_and_call(url: str, count: int, batch: int) -> dict[str, float]:
    """Encoding every batch, then running them pre-encoded: wall and CPU seconds of this
    process for each, and Redis's CPU seconds meanwhile."""
    settings = _settings(url)
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    now = time.time()
    stream = events(count, now)
    wall, cpu = time.perf_counter(), time.process_time()
    batches: list[EncodedBatch] = [
        encoder.encode(stream[i : i + batch], uuid.uuid4().hex, now) for i in range(0, count, batch)
    ]
    out = {"encode_s": time.perf_counter() - wall, "encode_cpu_s": time.process_time() - cpu}
    client = redis.Redis.from_url(url)
    script = lua_script(INGEST)
    script.load(client)
    redis_cpu = _redis_cpu_s(client)
    wall, cpu = time.perf_counter(), time.process_time()
    written = sum(script.run(client, b.keys, b.args) for b in batches)
    out["call_s"], out["call_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
    out["call_redis_cpu_s"] = _redis_cpu_s(client) - redis_cpu
    client.close()
    if written != count:
        raise RuntimeError(f"the script wrote {written} of {count} events")
    return out


def collector_run(url: str, count: int) -> dict[str, float]:
    """From the first record_* call until flush() returns: wall seconds, this process's CPU
    seconds (caller and flusher), Redis's CPU seconds; every event checked stored after."""
    settings = _settings(url)
    collector = MetricsCollector(settings)
    stream = events(count, time.time())
    query, decision = collector.record_query, collector.record_routing_decision
    client = redis.Redis.from_url(url)
    redis_cpu = _redis_cpu_s(client)
    wall, cpu = time.perf_counter(), time.process_time()
    for event in stream:
        if event[0] == "q":
            _, _, tier, latency, tokens, generation, error, ttft, queue = event
            query(tier, latency, tokens, generation, error, ttft, queue)
        elif event[0] == "r":
            _, _, complexity, tier, score, decision_ms, fallback = event
            decision(complexity, tier, score, decision_ms, fallback)
    collector.flush()
    out = {"collector_s": time.perf_counter() - wall, "collector_cpu_s": time.process_time() - cpu}
    out["collector_redis_cpu_s"] = _redis_cpu_s(client) - redis_cpu
    client.close()
    collector.close()
    stored = asyncio.run(_stored_queries(settings, url))
    queries = sum(1 for event in stream if event[0] == "q")
    if stored != queries:
        raise RuntimeError(f"{stored} of {queries} queries were stored")
    return out


async def _stored_queries(settings: Settings, url: str) -> int:
    # The URL as given, not from the settings: their shape differs between the trees.
    client = aioredis.Redis.from_url(url)
    try:
        return (await MetricsReader(client, settings).queries()).totalQueries
    finally:
        await client.aclose()


def main(argv: list[str]) -> None:
    url, count, batch = argv[0], int(argv[1]), int(argv[2])
    measured: dict[str, Any] = {"tree": metrics_store.__file__, "events": count}
    measured.update(encode_and_call(url, count, batch))
    measured.update(collector_run(url, count))
    print(json.dumps(measured))


if __name__ == "__main__":
    main(sys.argv[1:])
