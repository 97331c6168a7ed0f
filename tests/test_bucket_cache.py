"""A reader that keeps its copy of the buckets (redis/bucket_cache.py) answers exactly what a
reader that reads everything afresh answers, and what the recorded events sum to: through
random interleavings of writes (fresh, late into sealed buckets, from two collectors), moves
of the clock across bucket and roll-up boundaries, concurrent answers, and a feed that can no
longer vouch for the copy (trimmed, or the store flushed)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from metrics_store.read.reader import MetricsReader
from metrics_store.record.collector import MetricsCollector
from metrics_store.record.fold import fold_waiting
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.conftest import T0, delete_prefix
from tests.harness import StoreHarness, make_harness

WINDOWS = (None, 3_600, 86_400, 7 * 86_400)
TIERS = ("Q2", "Q3", "Q4")


class Recorded:
    """The queries recorded, by stamp: the plain sums an answer must equal."""

    def __init__(self) -> None:
        self.stamps: dict[str, list[float]] = defaultdict(list)

    def count(self, tier: str, start_s: float, end_s: float) -> int:
        return sum(1 for ts in self.stamps[tier] if start_s <= ts < end_s)


def record(
    store: StoreHarness, collector: MetricsCollector, recorded: Recorded, rng: random.Random
) -> None:
    """A few queries: most now, some late (into buckets long sealed and rolled up)."""
    now = store.clock.now()
    for _ in range(rng.randint(1, 6)):
        tier = rng.choice(TIERS)
        late = rng.random() < 0.3
        ts = now - rng.uniform(0, 6 * 3_600) if late else now
        store.clock.set(ts)
        latency = rng.lognormvariate(6.7, 1.0)
        collector.record_query(tier, latency, rng.randint(2, 400), latency * 0.9,
                               is_error=rng.random() < 0.1, ttft_ms=latency * 0.2,
                               queue_time_ms=rng.uniform(0, 50))  # fmt: skip
        collector.record_routing_decision("SIMPLE", tier, 0.5, 2.0, False)
        recorded.stamps[tier].append(ts)
        store.clock.set(now)
    collector.flush()


async def answers(reader: MetricsReader) -> list[Any]:
    fleet = await reader.fleet()  # its bucket-read parts (health follows the beats' clock)
    out: list[Any] = [(fleet.totals, fleet.histograms)]
    for window in WINDOWS:
        out += [
            await reader.queries(window),
            await reader.tiers(window),
            await reader.routing(window),
            await reader.latency(window),
        ]
    return out


def kept_reader(store: StoreHarness, scenario: Callable[[MetricsReader], Awaitable[None]]) -> None:
    """Run `scenario` with one reader that keeps its copy all along."""

    async def run() -> None:
        client = store.async_factory()
        try:
            await scenario(MetricsReader(client, store.settings, store.clock))
        finally:
            await client.aclose()

    asyncio.run(run())


async def fresh_answers(store: StoreHarness) -> list[Any]:
    """What a reader with no copy answers: every key read afresh."""
    client = store.async_factory()
    try:
        return await answers(MetricsReader(client, store.settings, store.clock))
    finally:
        await client.aclose()


def check_counts(latency: Any, recorded: Recorded) -> None:
    start, end = _epoch(latency.window.start), _epoch(latency.window.end)
    for entry in latency.tiers:
        assert entry.latencyMs.count == recorded.count(entry.name, start, end), (
            entry.name,
            start,
            end,
            sorted(ts for ts in recorded.stamps[entry.name] if start - 3600 <= ts < end),
        )


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_kept_copy_answers_as_a_fresh_read_and_as_the_plain_sums(store: StoreHarness) -> None:
    rng = random.Random(20)
    recorded = Recorded()
    second = store.new_collector(node="node-b")
    store.clock.advance(7 * 86_400)  # room for late writes without going before the epoch

    async def scenario(reader: MetricsReader) -> None:
        for step in range(40):
            record(store, rng.choice([store.collector, second]), recorded, rng)
            if step % 7 == 3:  # across fine, minute and hour boundaries
                store.clock.advance(rng.choice([10, 60, 590, 3_600]))
            kept = await answers(reader)
            fresh = await fresh_answers(store)
            for a, b in zip(kept, fresh, strict=True):
                assert a == b, f"step {step}: {a!r} != {b!r}"
            for window_latency in kept[4::4]:
                check_counts(window_latency, recorded)

    kept_reader(store, scenario)


def test_concurrent_answers_of_one_reader_stay_exact(store: StoreHarness) -> None:
    rng = random.Random(21)
    recorded = Recorded()

    async def scenario(reader: MetricsReader) -> None:
        for _ in range(8):
            record(store, store.collector, recorded, rng)
            together = await asyncio.gather(*(reader.latency(w) for w in WINDOWS * 3))
            for latency in together:
                check_counts(latency, recorded)
        assert await answers(reader) == await fresh_answers(store)

    kept_reader(store, scenario)


@pytest.mark.parametrize("how", ["trimmed", "emptied"])
def test_a_feed_that_cannot_vouch_for_the_copy_drops_it(store: StoreHarness, how: str) -> None:
    rng = random.Random(22)
    recorded = Recorded()

    async def scenario(reader: MetricsReader) -> None:
        record(store, store.collector, recorded, rng)
        await answers(reader)  # the copy now holds every key of every window
        if how == "emptied":  # every key of the store gone, feed and buckets alike
            delete_prefix(store.sync_factory(), store.settings.key_prefix)
            recorded.stamps.clear()
        else:  # writes the reader never saw, then their entries trimmed away (folded first:
            # the feed holds the bins no fold has taken yet, record/fold.lua)
            record(store, store.collector, recorded, rng)
            for shard in _shards(store):
                fold_waiting(store.client, shard, min_age_ms=0)
                store.client.xtrim(shard.change_feed, maxlen=0)
        record(store, store.collector, recorded, rng)
        kept = await answers(reader)
        assert kept == await fresh_answers(store)
        for latency in kept[4::4]:
            check_counts(latency, recorded)

    kept_reader(store, scenario)


def _shards(store: StoreHarness) -> list[Keys]:
    if store.backend != "cluster":
        return [store.keys]
    shard_roots = "{" + store.settings.key_prefix + ":*}"
    pattern = store.keys.change_feed.replace(store.keys.root, shard_roots)
    prefix = store.settings.key_prefix
    roots = {k.decode().removesuffix(":changes") for k in store.client.scan_iter(match=pattern)}
    return [Keys(prefix, root[len(prefix) + 2 : -1]) for root in sorted(roots)]


def test_after_a_write_an_answer_reads_the_feed_entry_not_the_buckets(settings: Settings) -> None:
    """The design's promise, counted by Redis itself (INFO commandstats, so on the real
    redis-server): once a reader holds a window's buckets, an answer after a write reads that
    write's feed entry (one XRANGE) and no bucket (FETCH, the only reader of bucket contents,
    types each key it reads: no TYPE call)."""
    store = make_harness("redis", settings, T0)
    rng = random.Random(23)
    recorded = Recorded()

    async def scenario(reader: MetricsReader) -> None:
        record(store, store.collector, recorded, rng)
        await reader.latency(7 * 86_400)  # the copy now holds the window's buckets
        for _ in range(3):
            store.client.config_resetstat()
            record(store, store.collector, recorded, rng)
            check_counts(await reader.latency(7 * 86_400), recorded)
            calls = {
                name.removeprefix("cmdstat_"): stats["calls"]
                for name, stats in store.client.info("commandstats").items()
            }
            assert calls.get("type", 0) == 0, calls
            assert calls.get("xrange", 0) == 1, calls

    try:
        kept_reader(store, scenario)
    finally:
        store.close()
