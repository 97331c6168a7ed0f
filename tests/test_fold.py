"""Folding (record/fold.lua): a batch's histogram bins wait in the change feed until a fold adds
many batches' bins to the hashes at once. Nothing may be lost or counted twice whatever the
fold meets: folds racing each other and the writers, a collector killed with bins waiting,
Redis killed under load and restarted from its AOF, a Sentinel failover and a Cluster primary
killed with bins waiting; and every answer is the same before and after each fold.

The ground truth is what the store holds of each event: the query stream's entries (the same
script call writes an event's stream entry and logs its bins), or the values recorded.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from metrics_store.histogram import bin_index
from metrics_store.read.reader import MetricsReader
from metrics_store.record import batch, upkeep
from metrics_store.record.collector import MetricsCollector
from metrics_store.record.fold import fold_waiting
from metrics_store.redis.keys import FIGURE_LATENCY, Keys
from metrics_store.redis.topology import sync_client, topology_for
from metrics_store.settings import Settings
from tests.cluster_topology import ClusterTopology
from tests.conftest import T0, delete_prefix
from tests.harness import StoreHarness, make_harness
from tests.processes import child_env
from tests.sentinel_topology import SentinelTopology
from tests.waiting import wait_until
from workers.redis_process import RedisServerProcess

TIERS = ("Q2", "Q3", "Q4")
Bins = dict[str, Counter[int]]  # tier -> bin -> count


def expected_bins(values: list[tuple[str, float]]) -> Bins:
    bins: Bins = {tier: Counter() for tier in TIERS}
    for tier, latency in values:
        bins[tier][bin_index(latency)] += 1
    return bins


def stream_bins(client: redis.Redis, shards: list[Keys]) -> Bins:
    """Each tier's latency bins as the query streams hold the events: the ground truth."""
    values = []
    for shard in shards:
        for _, fields in client.xrange(shard.query_stream):
            values.append((fields[b"tier"].decode(), float(fields[b"latency_ms"])))
    return expected_bins(values)


def stored_bins(client: redis.Redis, shards: list[Keys]) -> Bins:
    """Each tier's all-time latency hash as Redis holds it (summed over the shards)."""
    bins: Bins = {tier: Counter() for tier in TIERS}
    for shard in shards:
        for tier in TIERS:
            stored = client.hgetall(shard.histogram_totals(FIGURE_LATENCY, tier))
            for field, count in stored.items():
                if field != b"sum":
                    bins[tier][int(field)] += int(count)
    return bins


def answered_bins(store: StoreHarness) -> Bins:
    """The all-time latency bins as a reader answers them (`/metrics`), waiting bins included."""
    histograms = store.read(MetricsReader.fleet).histograms
    return {
        tier: Counter({int(b): int(n) for b, n in histograms[FIGURE_LATENCY, tier].bins.items()})
        for tier in TIERS
    }


def waiting(client: redis.Redis, shards: list[Keys]) -> int:
    return sum(int(client.hget(shard.fold_state, "behind") or 0) for shard in shards)


# --- answers are the same before and after each fold ---------------------------------------
def test_every_answer_is_the_same_before_and_after_each_fold(store: StoreHarness) -> None:
    rng = random.Random(31)
    second = store.new_collector(node="node-b")
    store.clock.advance(86_400)
    recorded: list[tuple[str, float]] = []

    async def answers(reader: MetricsReader) -> list[Any]:
        fleet = await reader.fleet()
        out: list[Any] = [fleet.histograms]
        for window in (None, 3_600, 86_400):
            out += [await reader.tiers(window), await reader.latency(window)]
        return out

    async def scenario() -> None:
        kept_client = store.async_factory()
        kept = MetricsReader(kept_client, store.settings, store.clock)
        try:
            for step in range(24):
                collector = rng.choice([store.collector, second])
                for _ in range(rng.randint(1, 40)):
                    tier, latency = rng.choice(TIERS), rng.lognormvariate(6.7, 1.0)
                    late = rng.random() < 0.2  # into buckets long sealed
                    now = store.clock.now()
                    store.clock.set(now - rng.uniform(0, 3_000) if late else now)
                    collector.record_query(tier, latency, 10, latency / 2, ttft_ms=latency / 5)
                    store.clock.set(now)
                    recorded.append((tier, latency))
                collector.flush()
                before = await answers(kept)
                if rng.random() < 0.5:
                    store.fold()
                fresh_client = store.async_factory()
                try:
                    fresh = await answers(MetricsReader(fresh_client, store.settings, store.clock))
                finally:
                    await fresh_client.aclose()
                assert await answers(kept) == before == fresh, f"step {step}"
                if step % 5 == 4:
                    store.clock.advance(rng.choice([10, 60, 600]))
        finally:
            await kept_client.aclose()

    asyncio.run(scenario())
    assert answered_bins(store) == expected_bins(recorded)
    store.fold()
    shards = topology_for(store.settings).shards
    assert waiting(store.client, shards) == 0
    assert stored_bins(store.client, shards) == expected_bins(recorded)


# --- folds racing folds and writers ---------------------------------------------------------
def test_racing_folds_and_writers_count_every_bin_once(settings: Settings) -> None:
    store = make_harness("redis", settings, T0)
    shards = [store.keys]
    stop = threading.Event()
    folds = [0, 0]

    def folder(n: int) -> None:
        client = redis.Redis.from_url(settings.redis.url)
        while not stop.is_set():
            folds[n] += fold_waiting(client, store.keys, min_age_ms=0).folded
        client.close()

    def writer(collector: MetricsCollector, seed: int, out: list[tuple[str, float]]) -> None:
        rng = random.Random(seed)
        for i in range(3_000):
            tier, latency = TIERS[i % 3], rng.lognormvariate(6.7, 1.0)
            collector.record_query(tier, latency, 10, latency / 2)
            out.append((tier, latency))
            if i % 97 == 0:
                collector.flush()
        collector.flush()

    values: list[list[tuple[str, float]]] = [[], []]
    collectors = [store.collector, store.new_collector(node="node-b")]
    threads = [threading.Thread(target=folder, args=(n,)) for n in range(2)]
    threads += [
        threading.Thread(target=writer, args=(c, n, values[n])) for n, c in enumerate(collectors)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads[2:]:
            thread.join()
        stop.set()
        for thread in threads[:2]:
            thread.join()
        store.fold()
        assert folds[0] > 0 and folds[1] > 0  # both folded while the writers wrote
        want = expected_bins(values[0] + values[1])
        assert stored_bins(store.client, shards) == want == stream_bins(store.client, shards)
    finally:
        store.close()


# --- a collector killed with bins waiting ---------------------------------------------------
KILLED_RECORDER = """
import os, signal, sys
from metrics_store import get_metrics_collector
collector = get_metrics_collector()
for i in range(int(sys.argv[1])):
    collector.record_query(("Q2", "Q3", "Q4")[i % 3], 20.0 + i * 0.37, 10, 5.0)
collector.flush(timeout_s=30)
os.kill(os.getpid(), signal.SIGKILL)  # before its upkeep folds what it wrote
"""


def test_a_collector_killed_with_bins_waiting_loses_none(settings: Settings, prefix: str) -> None:
    queries = 300
    env = child_env(settings.redis.url, prefix)
    done = subprocess.run([sys.executable, "-c", KILLED_RECORDER, str(queries)], env=env)
    assert done.returncode == -signal.SIGKILL
    store = make_harness("redis", settings, time.time())
    try:
        shards = [store.keys]
        want = expected_bins([(("Q2", "Q3", "Q4")[i % 3], 20.0 + i * 0.37) for i in range(queries)])
        # Answers count the waiting bins (a fold may have come first: folded ones count too).
        assert answered_bins(store) == want == stream_bins(store.client, shards)
        # The next collector's upkeep folds every shard now and then (FOLD_ALL_EVERY_BEATS).
        wait_until(lambda: waiting(store.client, shards) == 0, 40, "the upkeep's fold")
        assert stored_bins(store.client, shards) == want
    finally:
        store.close()


def test_a_collector_folds_the_shards_it_wrote_once_their_bins_waited_a_second(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No later batch comes to fold the last one: the collector's upkeep does, on the shard it
    wrote (its every-shard fold is put off here, so only that can fold it)."""
    monkeypatch.setattr(upkeep, "FOLD_ALL_EVERY_BEATS", 10**9)  # only at the first beat
    collector = MetricsCollector(settings)
    client = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.key_prefix)
    try:
        values = [(TIERS[i % 3], 50.0 + i) for i in range(60)]
        for tier, latency in values:
            collector.record_query(tier, latency, 10, 5.0)
        collector.flush()
        wait_until(lambda: waiting(client, [keys]) == 0, 30, "the upkeep's fold of its shard")
        assert stored_bins(client, [keys]) == expected_bins(values)
    finally:
        collector.close()
        client.close()


# --- Redis killed under load, restarted from its AOF ----------------------------------------
RECORDER = """
import sys, time
from metrics_store import get_metrics_collector
count, rate, progress = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
collector = get_metrics_collector()
for i in range(count):
    collector.record_query(("Q2", "Q3", "Q4")[i % 3], 30.0 + (i * 7919) % 9000 * 0.5, 10, 5.0)
    if i % 20 == 0:
        open(progress, "w").write(str(i))
    time.sleep(1.0 / rate)
collector.flush(timeout_s=90)
print(collector.written_events, collector.dropped_events, flush=True)
"""


@pytest.mark.timeout(120)
def test_redis_killed_under_load_keeps_every_bin_once(prefix: str, tmp_path: Path) -> None:
    server = RedisServerProcess(
        tmp_path / "redis", persist=True, extra_args=("--appendfsync", "always")
    )
    server.start()
    per_process = 1_200
    progress = [tmp_path / f"recorder-{n}" for n in range(2)]
    env = child_env(server.url, prefix, METRICS_BATCH_MAX_EVENTS="20")  # many folds
    recorders = [
        subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(per_process), "400", str(progress[n])],
            env={**env, "METRICS_NODE": f"recorder-{n}"},
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]

    def reached(steps: int) -> bool:
        return all(path.exists() and int(path.read_text() or 0) >= steps for path in progress)

    try:
        wait_until(lambda: reached(400), 30, "both recorders mid-stream")
        server.kill()  # wherever it is: mid-batch, mid-fold, between the two
        wait_until(lambda: reached(600), 30, "both recorders to record through the outage")
        server.start()  # same port, same AOF
        outputs = [recorder.communicate(timeout=90)[0].split() for recorder in recorders]
        assert [int(dropped) for _, dropped in outputs] == [0, 0]
        settings = Settings(redis_url=server.url, key_prefix=prefix)
        store = make_harness("redis", settings, time.time())
        try:
            shards = [store.keys]
            assert store.client.xlen(store.keys.query_stream) == 2 * per_process
            want = stream_bins(store.client, shards)
            assert answered_bins(store) == want
            store.fold()
            assert stored_bins(store.client, shards) == want
        finally:
            store.close()
    finally:
        for recorder in recorders:
            recorder.kill()
            recorder.wait()
        server.stop()


# --- a Sentinel failover, and a Cluster primary killed, with bins waiting -------------------
def record_waiting(settings: Settings, queries: int) -> list[tuple[str, float]]:
    """Queries written and acknowledged by a replica (flush returned), their bins left waiting:
    one batch per shard (no later batch to fold it), and the upkeep beats once, at its start,
    before the batch (no beat to fold it)."""
    collector = MetricsCollector(settings.replace(heartbeat_interval_s=600))
    values = [(TIERS[i % 3], 40.0 + i * 1.3) for i in range(queries)]
    try:
        for i, (tier, latency) in enumerate(values):
            collector.record_query(tier, latency, 10, 5.0)
            if i % 100 == 99:  # batches of 100, spread over a cluster's shards
                collector.flush(timeout_s=30)
        collector.flush(timeout_s=30)
    finally:
        collector.close()
    return values


def assert_kept_once(
    backend: str, settings: Settings, values: list[tuple[str, float]], shards: list[Keys]
) -> None:
    """After the failover: answers count every bin once, and so do the hashes once folded."""
    store = make_harness(backend, settings, time.time())  # through the sentinels, or cluster
    try:
        want = expected_bins(values)
        assert answered_bins(store) == want == stream_bins(store.client, shards)
        store.fold()
        assert stored_bins(store.client, shards) == want
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_a_sentinel_failover_with_bins_waiting_keeps_every_bin_once(
    tmp_path: Path, prefix: str
) -> None:
    with SentinelTopology(tmp_path / "topology") as topology:
        settings = Settings(
            redis_url=topology.url,
            redis_sentinels=topology.sentinels_setting,
            key_prefix=prefix,
            redis_min_replicas_ack=1,
        )
        values = record_waiting(settings, 500)
        client = sync_client(settings)
        shards = [Keys(prefix)]
        assert waiting(client, shards) > 0  # the failover finds bins waiting
        client.close()
        old_port = topology.primary_port()
        sentinel = redis.Redis(host="127.0.0.1", port=topology.sentinels[0][1])
        sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
        sentinel.close()
        topology.wait_failover(old_port)
        assert_kept_once("sentinel", settings, values, shards)


@pytest.mark.timeout(180)
def test_a_cluster_primary_killed_with_bins_waiting_keeps_every_bin_once(
    redis_cluster: ClusterTopology, prefix: str
) -> None:
    settings = Settings(
        redis_url=redis_cluster.url, redis_cluster=True, key_prefix=prefix,
        redis_min_replicas_ack=1,
    )  # fmt: skip
    values = record_waiting(settings, 600)
    client = sync_client(settings)
    shards = topology_for(settings).shards
    # A primary (not the seed node the clients start from) serving a shard with bins waiting.
    ports = {
        client.get_node_from_key(shard.fold_state).port
        for shard in shards
        if client.hget(shard.fold_state, "behind") not in (None, b"0")
    }
    victim = next(
        n for n in redis_cluster.primaries() if n is not redis_cluster.nodes[0] and n.port in ports
    )
    victim.kill()
    try:
        wait_until(lambda: len(redis_cluster.primaries()) == 3, 30, "its replica's promotion")
        redis_cluster.wait_healthy()
        assert_kept_once("cluster", settings, values, shards)
    finally:
        victim.start()
        redis_cluster.wait_healthy(60)
        client.close()
        delete_prefix(sync_client(settings), prefix)


# --- a rolling upgrade: entries of the format before folding --------------------------------
def test_an_entry_whose_batch_wrote_its_bins_at_once_is_neither_added_again_nor_folded(
    settings: Settings,
) -> None:
    """A collector of ingest v3 (before folding) writes its bins at once and logs an entry with
    Redis's sums ("sums"): a kept copy adds its bins and takes its sums, a fresh read adds
    nothing for it, and a fold skips it."""
    store = make_harness("redis", settings, T0)
    try:
        for i in range(30):
            store.collector.record_query("Q2", 100.0 + i, 10, 5.0)
        store.collector.flush()

        async def scenario() -> None:
            client = store.async_factory()
            kept = MetricsReader(client, store.settings, store.clock)
            try:
                await kept.fleet()  # holds the all-time hash
                # What a v3 collector's call does for one query of 7 ms: bins, then the entry.
                hash_key = store.keys.histogram_totals(FIGURE_LATENCY, "Q2")
                bin_field = str(bin_index(7.0))
                store.client.hincrby(hash_key, bin_field, 1)
                new_sum = store.client.hincrbyfloat(hash_key, "sum", 7.0)
                entry = {
                    "keys": hash_key,
                    "increments": "",
                    "histograms": f"1 1 2 sum 7.0 {bin_field} 1",
                    "sums": f"1 {new_sum!r}",
                }
                entry_id = store.client.xadd(store.keys.change_feed, entry)  # type: ignore[arg-type]
                store.client.set(store.keys.change_head, entry_id)
                fresh_client = store.async_factory()
                try:
                    fresh = await MetricsReader(fresh_client, store.settings, store.clock).fleet()
                finally:
                    await fresh_client.aclose()
                assert (await kept.fleet()).histograms == fresh.histograms
                store.fold()
                assert (await kept.fleet()).histograms == fresh.histograms
                bins = fresh.histograms[FIGURE_LATENCY, "Q2"].bins
                assert sum(bins.values()) == 31
            finally:
                await client.aclose()

        asyncio.run(scenario())
        values = [("Q2", 100.0 + i) for i in range(30)] + [("Q2", 7.0)]
        assert stored_bins(store.client, [store.keys]) == expected_bins(values)
    finally:
        store.close()


def test_a_fold_of_bins_spread_over_many_buckets_takes_them_a_bounded_part_at_a_time(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill's batches each spread their bins over many buckets: one fold call writes the
    oldest entries up to FOLD_WRITES hash fields (at least one entry), the next the rest, and
    every bin lands once."""
    # No fold but this test's own: none by count or age at ingest, none by the upkeep's beat.
    monkeypatch.setattr(batch, "FOLD_ENTRIES", 10**6)
    monkeypatch.setattr(batch, "FOLD_AGE_MS", 10**9)
    store = make_harness("redis", settings, T0)
    store.collector.close()  # its upkeep would fold every shard every 10 beats
    collector = store.new_collector(heartbeat_interval_s=600)
    try:
        rng = random.Random(5)
        values = []
        for _ in range(6):  # six batches, each over 400 ten-second buckets of a day
            for _ in range(500):
                tier, latency = rng.choice(TIERS), rng.lognormvariate(6.7, 1.0)
                store.clock.set(T0 - rng.randrange(400) * 10)
                collector.record_query(tier, latency, 10, 5.0, ttft_ms=latency / 3)
                values.append((tier, latency))
            collector.flush()
        store.clock.set(T0)
        shards = [store.keys]
        assert answered_bins(store) == expected_bins(values)
        first = fold_waiting(store.client, store.keys, min_age_ms=0)
        assert first.folded >= 1 and first.waiting > 0  # bounded: not all six at once
        store.fold()
        assert waiting(store.client, shards) == 0
        assert stored_bins(store.client, shards) == expected_bins(values)
        assert answered_bins(store) == expected_bins(values)
    finally:
        store.close()
