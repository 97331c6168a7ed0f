"""The realistic store of issue 20: data in every bucket a read can touch, so that a read's
cost is measured where it lies (a store whose events sit in one bucket measures nothing).

Every 10-second bucket of the last 30 minutes, and every 5 minutes over 7 days, holds a point
of `per_point` queries over three tiers (log-normal latency, median 800 ms, sigma 1; TTFT,
queue time and tokens with it) and as many routing decisions. The events are written by the
ingest script from an encoder whose settings trust the writer's clock
(METRICS_CLOCK_SKEW_TOLERANCE_S=0), as a collector recording with a moved clock would.
"""

from __future__ import annotations

import math
import random
import time
import uuid

import redis

from bench.common import progress
from metrics_store.record.batch import BatchEncoder
from metrics_store.record.events import Event
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings

TIERS = ("Q2", "Q3", "Q4")
COMPLEXITIES = ("SIMPLE", "MODERATE", "COMPLEX")
RECENT_S = 30 * 60
RECENT_STEP_S = 10
HISTORY_S = 7 * 86_400
HISTORY_STEP_S = 300


def point_events(rng: random.Random, start_s: float, span_s: float, count: int) -> list[Event]:
    """`count` queries and `count` routing decisions spread over [start, start + span)."""
    events: list[Event] = []
    for i in range(count):
        ts = start_s + span_s * i / count
        tier = TIERS[i % 3]
        latency = rng.lognormvariate(math.log(800.0), 1.0)
        ttft = latency * rng.uniform(0.05, 0.4)
        queue = min(ttft, rng.lognormvariate(math.log(20.0), 1.0))
        tokens = max(2, int(rng.gauss(300, 100)))
        error = rng.random() < 0.01
        events.append(("q", ts, tier, latency, tokens, latency - queue, error, ttft, queue))
        complexity = COMPLEXITIES[(i // 3) % 3]
        events.append(
            ("r", ts, complexity, tier, rng.uniform(0, 1), rng.uniform(1, 30), i % 50 == 0)
        )
    return events


def point_starts(now_s: float) -> list[tuple[float, float]]:
    """(start, span) of every point: 5-minute points over 7 days, then 10-second ones."""
    recent_start = now_s - RECENT_S
    points = [
        (recent_start - HISTORY_S + i * HISTORY_STEP_S, float(RECENT_STEP_S))
        for i in range(HISTORY_S // HISTORY_STEP_S)
    ]
    points += [
        (recent_start + i * RECENT_STEP_S, float(RECENT_STEP_S - 1))
        for i in range(RECENT_S // RECENT_STEP_S)
    ]
    return points


def load_realistic_store(settings: Settings, per_point: int = 300, seed: int = 20) -> int:
    """Fill the store; returns the events written. `settings` must trust the writer's clock."""
    if settings.recording.clock_skew_tolerance_s != 0:
        raise ValueError("the realistic store is written with clock_skew_tolerance_s=0")
    rng = random.Random(seed)
    now = time.time()
    client = redis.Redis.from_url(settings.redis.url)
    script = lua_script(INGEST)
    script.load(client)
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    points = point_starts(now)
    written = 0
    pipe = client.pipeline(transaction=False)
    for n, (start, span) in enumerate(points):
        events = point_events(rng, start, span, per_point)
        encoded = encoder.encode(events, uuid.uuid4().hex, now)
        script.queue(pipe, encoded.keys, encoded.args)
        written += len(events)
        if n % 50 == 49:
            pipe.execute()
            pipe = client.pipeline(transaction=False)
            if n % 500 == 499:
                progress(f"realistic store: {n + 1:,} of {len(points):,} points")
    pipe.execute()
    client.close()
    return written
