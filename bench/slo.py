"""The objectives' cost per tick (issue 24): Redis CPU and the tick winner's CPU, with 20
objectives of 30-day windows, on a store with data in every bucket those windows read.

`python -m bench --only slo`: the realistic store (bench/realistic_store.py: every 10-second
bucket of 30 minutes, every 5 minutes of 7 days) plus one point an hour over 31 days, then
`ticks` live updates one simulated second apart, each after a fresh write (one batch of ten
queries), as the tick winner computes them: once with the 20 objectives, once with none. The
difference is the objectives' share; each write's own cost, measured alone, is taken out.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import redis
import redis.asyncio as aioredis

from bench.common import Table, private_redis, progress, write_results
from bench.realistic_store import TIERS, load_realistic_store, point_events
from bench.redis_cost import CpuMeter
from metrics_store.clock import ManualClock
from metrics_store.read.reader import MetricsReader
from metrics_store.record.batch import BatchEncoder
from metrics_store.redis.keys import FIGURES, Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings
from metrics_store.slo.definitions import parse_objectives
from metrics_store.slo.store import SharedObjectives

DAY_S = 86_400
TARGET_MS = 2.0  # issue 24: the objectives' Redis CPU per tick


def twenty_objectives() -> dict[str, Any]:
    """A latency objective per tier and figure (12), errors per tier and for all (4), a
    combined one per tier (3), and latency over every tier (1): all over 30 days."""
    found: list[dict[str, Any]] = []
    for tier in TIERS:
        for figure in FIGURES:
            found.append(
                {"name": f"{tier}-{figure}", "tier": tier, "kind": "latency",
                 "figure": figure, "thresholdMs": 1500, "target": 0.99}
            )  # fmt: skip
        found.append({"name": f"{tier}-errors", "tier": tier, "kind": "errors", "target": 0.995})
        found.append({"name": f"{tier}-good", "tier": tier, "kind": "combined", "target": 0.95})
    found.append({"name": "all-errors", "tier": "*", "kind": "errors", "target": 0.999})
    found.append(
        {"name": "all-latency", "tier": "*", "kind": "latency", "thresholdMs": 3000,
         "target": 0.99}
    )  # fmt: skip
    return {"objectives": found}


def load_month(settings: Settings, now_s: float, per_point: int) -> int:
    """One point an hour over 31 days (what the hour roll-ups hold past the 7 days)."""
    rng = random.Random(24)
    client = redis.Redis.from_url(settings.redis.url)
    script = lua_script(INGEST)
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    pipe = client.pipeline(transaction=False)
    written = 0
    for hour in range(31 * 24):
        start = now_s - 31 * DAY_S + hour * 3600
        events = point_events(rng, start, 10.0, per_point)
        encoded = encoder.encode(events, uuid.uuid4().hex, now_s)
        script.queue(pipe, encoded.keys, encoded.args)
        written += len(events)
    pipe.execute()
    client.close()
    return written


class Ticks:
    """Live updates as the winner computes them, each after a fresh write."""

    def __init__(self, settings: Settings, clock: ManualClock) -> None:
        self._settings = settings
        self._clock = clock
        self._client = redis.Redis.from_url(settings.redis.url)
        self._script = lua_script(INGEST)
        self._encoder = BatchEncoder(settings, Keys(settings.key_prefix))
        self._rng = random.Random(7)

    def write(self) -> None:
        now = self._clock.now()
        encoded = self._encoder.encode(point_events(self._rng, now, 0.5, 5), uuid.uuid4().hex, now)
        self._script.run(self._client, encoded.keys, encoded.args)

    async def run(self, reader: MetricsReader, ticks: int, write: bool) -> float:
        """Ticks one second apart; returns this process's CPU seconds spent in them."""
        cpu = 0.0
        for _ in range(ticks):
            self._clock.advance(1.0)
            if write:
                self.write()
            started = time.process_time()
            await reader.update()
            cpu += time.process_time() - started
        return cpu

    def close(self) -> None:
        self._client.close()


def _measure(settings: Settings, clock: ManualClock, ticks: int) -> dict[str, float]:
    meter = CpuMeter(redis.Redis.from_url(settings.redis.url))
    loop = asyncio.new_event_loop()
    found: dict[str, float] = {}
    try:
        for label, objectives in (("none", {"objectives": []}), ("twenty", twenty_objectives())):
            found.update(_measure_one(loop, meter, settings, clock, ticks, label, objectives))
    finally:
        loop.close()
    return found


def _measure_one(
    loop: asyncio.AbstractEventLoop,
    meter: CpuMeter,
    settings: Settings,
    clock: ManualClock,
    ticks: int,
    label: str,
    objectives: dict[str, Any],
) -> dict[str, float]:
    client = aioredis.Redis.from_url(settings.redis.url)
    shared = SharedObjectives(client, settings, None)
    defined = parse_objectives(objectives, settings.tiers, settings.slo.history_s)
    loop.run_until_complete(shared.replace(defined))
    reader = MetricsReader(client, settings, clock, shared)
    tick = Ticks(settings, clock)
    found: dict[str, float] = {}
    started = time.process_time()
    first = meter.over(lambda: loop.run_until_complete(reader.update()))
    found[f"{label}_first_redis_ms"] = first * 1000
    found[f"{label}_first_winner_ms"] = (time.process_time() - started) * 1000
    winner = [0.0]

    def ticking() -> None:
        winner[0] += loop.run_until_complete(tick.run(reader, ticks, write=True))

    def writes_alone() -> None:
        for _ in range(ticks):
            tick.write()

    spent = meter.over(ticking) - meter.over(writes_alone)
    found[f"{label}_redis_ms"] = max(0.0, spent) / ticks * 1000
    found[f"{label}_winner_ms"] = winner[0] / ticks * 1000
    tick.close()
    loop.run_until_complete(client.aclose())
    progress(f"{label}: {found[f'{label}_redis_ms']:.3f} ms of Redis CPU per tick")
    return found


def run(full: bool) -> dict[str, Any]:
    per_point, ticks = (300, 300) if full else (50, 120)
    with private_redis() as server:
        settings = Settings(
            redis_url=server.url, key_prefix=f"b{uuid.uuid4().hex[:8]}", clock_skew_tolerance_s=0
        )
        now_s = time.time()
        events = load_realistic_store(settings, per_point=per_point)
        events += load_month(settings, now_s, per_point)
        progress(f"store: {events:,} events over 31 days")
        found = _measure(settings, ManualClock(now_s), ticks)
    table = Table(
        "The live tick with and without 20 objectives of 30 days (ms per tick)",
        ["objectives", "Redis CPU", "winner CPU", "first tick: Redis", "first tick: winner"],
    )
    for label in ("none", "twenty"):
        table.add(
            label,
            f"{found[f'{label}_redis_ms']:.3f}",
            f"{found[f'{label}_winner_ms']:.2f}",
            f"{found[f'{label}_first_redis_ms']:.1f}",
            f"{found[f'{label}_first_winner_ms']:.1f}",
        )
    share = found["twenty_redis_ms"] - found["none_redis_ms"]
    winner_share = found["twenty_winner_ms"] - found["none_winner_ms"]
    table.add("their share", f"{share:.3f}", f"{winner_share:.2f}", "", "")
    print(table.render())
    print(f"  target: the objectives' Redis CPU per tick under {TARGET_MS} ms: {share:.3f} ms")
    results = {**found, "events": events, "ticks": ticks, "table": table.rows}
    write_results("slo", results)
    return results
