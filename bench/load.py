"""Fill a store fast: synthetic events spread over the window, written by the ingest script."""

from __future__ import annotations

import random
import time
import uuid

import orjson
import redis

from metrics_store.live.snapshots import NodeSnapshot
from metrics_store.record.batch import BatchEncoder
from metrics_store.record.events import Event
from metrics_store.redis.client import redis_now
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings

BATCH = 1000


def synthetic_events(count: int, start_s: float, span_s: float, seed: int = 1) -> list[Event]:
    """`count` events, half queries and half routing decisions, evenly over [start, start+span)."""
    rng = random.Random(seed)
    tiers, complexities = ("Q2", "Q3", "Q4"), ("SIMPLE", "MODERATE", "COMPLEX")
    events: list[Event] = []
    for i in range(count):
        ts = start_s + span_s * i / count
        if i % 2:
            events.append(("q", ts, tiers[i % 3], rng.uniform(100, 9000), rng.randint(1, 500),
                           rng.uniform(50, 8000), i % 97 == 0, rng.uniform(20, 800),
                           rng.uniform(0, 200)))  # fmt: skip
        else:
            events.append(("r", ts, complexities[i % 3], tiers[(i // 3) % 3],
                           rng.uniform(0, 10), rng.uniform(1, 30), i % 31 == 0))  # fmt: skip
    return events


def load_events(settings: Settings, count: int, span_s: float, end_s: float | None = None) -> None:
    """Write `count` events over the `span_s` seconds before `end_s` (default now)."""
    end = end_s if end_s is not None else time.time()
    client = redis.Redis.from_url(settings.redis.url)
    script = lua_script(INGEST)
    script.load(client)
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    written = 0
    while written < count:
        size = min(BATCH * 100, count - written)
        start = end - span_s + span_s * written / count
        chunk = synthetic_events(size, start, span_s * size / count, seed=written)
        pipe = client.pipeline(transaction=False)
        for i in range(0, size, BATCH):
            encoded = encoder.encode(chunk[i : i + BATCH], uuid.uuid4().hex, end)
            script.queue(pipe, encoded.keys, encoded.args)
        pipe.execute()
        written += size
    client.close()


def load_snapshots(settings: Settings, nodes: int) -> None:
    """Hardware snapshots of `nodes` live nodes, as samplers would write them."""
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.key_prefix)
    # Both stamps an hour ahead: the nodes stay live for the whole run without a sampler, for
    # readers that judge by the sampler's stamp (older revisions) or by Redis's (this one).
    ahead = redis_now(client) + 3600
    for n in range(nodes):
        snapshot = NodeSnapshot(
            node=f"node-{n}", sampled_at=time.time() + 3600, stored_at=ahead, cpu_percent=40.0,
            cpu_cores=16, memory_used_bytes=12 * 2**30, memory_total_bytes=32 * 2**30,
            vram_used_bytes=8 * 2**30, vram_total_bytes=24 * 2**30,
        )  # fmt: skip
        client.hset(keys.snapshots, snapshot.node, orjson.dumps(snapshot.model_dump()))
    client.close()


def load_history(
    settings: Settings, recent_rate: int, recent_s: int, older_per_slot: int, span_s: int
) -> int:
    """Realistic queries (bench/histogram_memory.py's spreads) over the `span_s` before now:
    `recent_rate` per second over the last `recent_s`, and `older_per_slot` per 10 minutes
    before that. A read's cost is the buckets it reads and the bins they hold, not the counts
    in the bins, so the older history needs enough events per bucket to occupy realistic bins,
    not 1,000 per second. The settings must trust the writer's clock (clock_skew_tolerance_s=0).
    Returns the events written."""
    from bench.histogram_memory import realistic_query

    rng = random.Random(14)
    now = time.time()
    slot_s = 600
    older_start = now - span_s
    step_s = slot_s / older_per_slot
    stamps = [
        older_start + i * step_s for i in range((span_s - recent_s) // slot_s * older_per_slot)
    ]
    recent_start = now - recent_s
    stamps += [recent_start + i / recent_rate for i in range(recent_s * recent_rate)]
    client = redis.Redis.from_url(settings.redis.url)
    script = lua_script(INGEST)
    script.load(client)
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    for first in range(0, len(stamps), BATCH * 100):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(first + BATCH * 100, len(stamps)), BATCH):
            chunk: list[Event] = [
                realistic_query(rng, ts, n % 3) for n, ts in enumerate(stamps[i : i + BATCH])
            ]
            encoded = encoder.encode(chunk, uuid.uuid4().hex, now)
            script.queue(pipe, encoded.keys, encoded.args)
        pipe.execute()
    client.close()
    return len(stamps)
