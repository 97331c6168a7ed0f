"""Redis Cluster mode: writes reach every primary, and the answers equal a single Redis's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from websockets.asyncio.client import connect

from metrics_store.errors import StoreUnavailable
from metrics_store.read.reader import MetricsReader
from metrics_store.redis.keys import Keys
from metrics_store.redis.shards import ShardPicker, shard_labels, tag_slot
from metrics_store.redis.topology import async_client, sync_client, topology_for
from metrics_store.settings import Settings
from tests.cluster_topology import ClusterTopology
from tests.conftest import T0, delete_prefix
from tests.harness import StoreHarness, make_harness
from tests.processes import ApiProcess, child_env, start_replicas
from tests.test_failover import PER_PROCESS, finish, start_recorders, wait_mid_stream
from tests.test_live_processes import Received, assert_strictly_increasing, record
from tests.waiting import wait_until
from workers.services import RedisMemorySource

RECORD = textwrap.dedent(
    """
    from metrics_store import get_metrics_collector
    c = get_metrics_collector()
    for i in range(400):
        c.record_query("Q2", 100.0 + i, 20, 400.0)
        if i % 20 == 0:
            c.flush(timeout_s=10)  # many small batches: each goes to the next shard
    c.flush(timeout_s=10)
    """
)


def test_shard_tags_spread_evenly_over_the_slots() -> None:
    for primaries in range(3, 17):
        per_primary = [0] * primaries
        for label in shard_labels("metrics", 16):
            per_primary[tag_slot("metrics", label) * primaries // 16384] += 1
        assert min(per_primary) >= 1
        assert max(per_primary) - min(per_primary) <= 1


def test_batches_go_to_each_primary_in_turn_on_its_home_shard(
    redis_cluster: ClusterTopology,
) -> None:
    settings = Settings(redis_url=redis_cluster.url, redis_cluster=True)
    client = sync_client(settings)
    try:
        shards = topology_for(settings).shards
        owner = [client.get_node_from_key(shard.root).name for shard in shards]
        assert sorted(Counter(owner).values()) == [5, 5, 6]  # 16 shards cannot split evenly
        picker = ShardPicker(shards, client)
        picks = Counter(picker.next() for _ in range(3 * 100))
    finally:
        client.close()
    # Every primary gets the same number of batches (not 6/5/5 of them), all on one shard:
    # its lowest-numbered, the same for every collector.
    assert sorted(picks.values()) == [100, 100, 100]
    assert {owner[shard] for shard in picks} == set(owner)
    for shard in picks:
        assert shard == owner.index(owner[shard])


def test_redis_cache_size_is_the_memory_of_every_primary(redis_cluster: ClusterTopology) -> None:
    settings = Settings(redis_url=redis_cluster.url, redis_cluster=True)
    client = sync_client(settings)
    try:
        reported = RedisMemorySource(client, topology_for(settings).used_memory).read()
    finally:
        client.close()
    each = []
    for primary in redis_cluster.primaries():
        direct = redis.Redis(host="127.0.0.1", port=primary.port)
        try:
            each.append(int(direct.info("memory")["used_memory"]))
        finally:
            direct.close()
    assert len(each) == 3
    # Not one node's figure (the default node's, as a plain INFO gives): all three, added.
    assert reported > max(each) + min(each) / 2
    assert abs(reported - sum(each)) < 0.1 * sum(each)  # memory moves a little between reads


def test_two_collector_processes_write_to_every_primary(
    redis_cluster: ClusterTopology, prefix: str
) -> None:
    env = child_env(redis_cluster.url, prefix, METRICS_REDIS_CLUSTER="true")
    writers = [
        subprocess.Popen([sys.executable, "-c", RECORD], env={**env, "METRICS_NODE": f"w{n}"})
        for n in range(2)
    ]
    try:
        assert [writer.wait(timeout=60) for writer in writers] == [0, 0]
        primaries = redis_cluster.primaries()
        assert len(primaries) == 3
        for primary in primaries:
            client = redis.Redis(host="127.0.0.1", port=primary.port)
            try:
                found = list(client.scan_iter(match=Keys(prefix).scan_pattern, count=1000))
            finally:
                client.close()
            data = [k for k in found if k.startswith(Keys(prefix).root.encode()[:-1] + b":")]
            assert data, f"primary {primary.port} holds no data keys"
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
        cluster_settings = Settings(
            redis_url=redis_cluster.url, redis_cluster=True, key_prefix=prefix
        )
        delete_prefix(sync_client(cluster_settings), prefix)


@pytest.fixture(params=["home shards", "every shard"])
def single_and_cluster(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[StoreHarness, StoreHarness]]:
    """A single Redis and the cluster, empty. "every shard": batches go to all 16 shards, as
    after the cluster's slots moved about (several shards with data on one primary)."""
    if request.param == "every shard":
        monkeypatch.setattr(ShardPicker, "homes", lambda picker: list(range(len(picker._roots))))
    cluster: ClusterTopology = request.getfixturevalue("redis_cluster")
    single = make_harness("redis", settings, T0)
    on_cluster = settings.replace(redis_url=cluster.url, redis_cluster=True)
    clustered = make_harness("cluster", on_cluster, T0)
    yield single, clustered
    single.close()
    clustered.close()
    delete_prefix(clustered.sync_factory(), settings.key_prefix)


def assert_shards_written(store: StoreHarness, written: int) -> None:
    if len(ShardPicker(topology_for(store.settings).shards, store.client).homes()) == 3:
        assert written == 3  # each primary's home shard
    else:
        assert written > 3  # "every shard": several shards of one primary hold data


def record_the_same(store: StoreHarness) -> None:
    """A few hundred events over several buckets, in batches that land on many shards."""
    c = store.collector
    for i in range(300):
        store.clock.set(T0 - 600 + i * 2.0 + 0.001 * (i % 7))  # distinct stamps, 10 minutes
        tier = ("Q2", "Q3", "Q4")[i % 3]
        # Halves and whole ms: every sum is exact in binary, so shards' sums add up exactly.
        ttft = 5.0 + (i % 9) * 0.5 if i % 2 == 0 else None
        queue = 1.0 + i % 3 if i % 3 else None
        c.record_query(
            tier, 50.0 + i * 1.5, 10 + i, 200.0 + i, i % 11 == 0, ttft_ms=ttft, queue_time_ms=queue
        )
        complexity = ("SIMPLE", "MODERATE", "COMPLEX")[i % 3]
        c.record_routing_decision(complexity, tier, 0.25 * (i % 5), 1.0 + i % 4, i % 13 == 0)
        if i % 25 == 0:
            c.update_model_availability(tier, i % 4, 4)
            c.flush(timeout_s=10)
    # The node's last beat: single Redis beats with every batch, a cluster with its control
    # writes and the flusher's heartbeat; a report now gives both the same one.
    store.clock.set(T0)
    c.update_model_availability("Q2", 3, 4)
    c.flush(timeout_s=10)


def test_single_redis_and_the_cluster_give_identical_answers(
    single_and_cluster: tuple[StoreHarness, StoreHarness],
) -> None:
    single, clustered = single_and_cluster
    for store in (single, clustered):
        record_the_same(store)
    for read in (MetricsReader.queries, MetricsReader.tiers, MetricsReader.routing):
        assert clustered.read(read).model_dump() == single.read(read).model_dump()
    shards_written = [key for key in clustered.data_keys() if key.endswith("}:totals")]
    assert_shards_written(clustered, len(shards_written))


def test_an_empty_cluster_answers_like_an_empty_single_redis(
    single_and_cluster: tuple[StoreHarness, StoreHarness],
) -> None:
    single, clustered = single_and_cluster  # nothing recorded: no shard is read, all probed
    reads = (MetricsReader.queries, MetricsReader.tiers, MetricsReader.routing)
    for read in (*reads, MetricsReader.latency, MetricsReader.update):
        assert clustered.read(read).model_dump() == single.read(read).model_dump(), read


def test_one_reader_sees_shards_written_after_its_first_read(
    single_and_cluster: tuple[StoreHarness, StoreHarness],
) -> None:
    _, clustered = single_and_cluster

    async def before_and_after() -> tuple[int, int]:
        client = clustered.async_factory()
        reader = MetricsReader(client, clustered.settings, clustered.clock)
        try:
            before = (await reader.queries()).totalQueries  # every shard unwritten, probed
            for i in range(30):
                clustered.collector.record_query("Q2", 100.0, 10, 200.0)
                if i % 3 == 0:
                    clustered.collector.flush(timeout_s=10)  # batches on several shards
            clustered.collector.flush(timeout_s=10)
            return before, (await reader.queries()).totalQueries
        finally:
            await client.aclose()

    assert asyncio.run(before_and_after()) == (0, 30)  # not a second late: found, then read


def test_a_cluster_gone_away_is_an_outage_not_a_bug(tmp_path: Path) -> None:
    async def read_before_and_after_stop(cluster: ClusterTopology) -> int:
        settings = Settings(redis_url=cluster.url, redis_cluster=True)
        client = async_client(settings)
        reader = MetricsReader(client, settings)
        try:
            before = (await reader.queries()).totalQueries
            cluster.stop()
            with pytest.raises(StoreUnavailable):  # the API's 503, not a 500
                await reader.queries()
            return before
        finally:
            await client.aclose()

    with ClusterTopology(tmp_path) as cluster:
        assert asyncio.run(read_before_and_after_stop(cluster)) == 0


def test_histograms_and_totals_are_per_shard_and_add_up_to_a_single_redis(
    single_and_cluster: tuple[StoreHarness, StoreHarness],
) -> None:
    single, clustered = single_and_cluster
    for store in (single, clustered):
        record_the_same(store)
        store.fold()  # every histogram hash complete, to count them below
    # Write-heavy keys are data keys: each shard holds its own totals and histograms.
    cluster_keys = clustered.data_keys()
    totals = [k for k in cluster_keys if k.endswith("}:totals")]
    hourly = [k for k in cluster_keys if ":h:latency:Q2:3600s:" in k]
    assert len(totals) == len(hourly)
    assert_shards_written(clustered, len(totals))
    assert Keys(single.settings.key_prefix).totals in single.data_keys()
    for window_s in (None, 1800, 6 * 3600):
        for read in (MetricsReader.latency, MetricsReader.tiers, MetricsReader.queries):

            async def call(
                reader: MetricsReader, read: Any = read, w: int | None = window_s
            ) -> Any:
                return await read(reader, w)

            assert clustered.read(call).model_dump() == single.read(call).model_dump(), read
    one, many = single.read(MetricsReader.fleet), clustered.read(MetricsReader.fleet)
    assert many.totals == one.totals
    assert many.histograms == one.histograms  # bins and sums, exactly
    assert sum(h.bins[b] for h in one.histograms.values() for b in h.bins) == 300 + 150


def endpoint_totals(api: ApiProcess) -> dict[str, int]:
    """Queries and decisions as each endpoint counts them (streams are per shard here)."""
    tiers = api.get("/api/metrics/tiers").json()["tiers"]
    return {
        "/queries": api.get("/api/metrics/queries").json()["totalQueries"],
        "/tiers": sum(t["requestCount"] for t in tiers),
        "/routing": api.get("/api/metrics/routing").json()["accuracyMetrics"]["totalDecisions"],
    }


@pytest.mark.timeout(180)
def test_a_killed_primary_loses_no_acknowledged_event_with_one_replica_ack(
    redis_cluster: ClusterTopology, prefix: str
) -> None:
    ack = {"METRICS_REDIS_MIN_REPLICAS_ACK": "1", "METRICS_RETRY_MAX_BACKOFF_S": "0.5"}
    env = child_env(redis_cluster.url, prefix, METRICS_REDIS_CLUSTER="true", **ack)
    # Not the seed node of REDIS_URL: a client that starts in the gap needs it to answer.
    victim = next(n for n in redis_cluster.primaries() if n is not redis_cluster.nodes[0])
    api = ApiProcess(env)
    api.start()
    recorders = start_recorders(env)
    try:
        wait_mid_stream(recorders, lambda: endpoint_totals(api)["/queries"])
        victim.kill()
        wait_until(lambda: len(redis_cluster.primaries()) == 3, 30, "its replica's promotion")
        redis_cluster.wait_healthy()
        # The promoted replica has no replica to acknowledge: that shard's writes wait (the
        # recorders buffer) until the killed node is back as its replica.
        victim.start()
        redis_cluster.wait_healthy(60)
        finish(recorders)  # every event acknowledged by flush(), none dropped
        assert set(endpoint_totals(api).values()) == {2 * PER_PROCESS}  # the API resumed
    finally:
        for recorder in recorders:
            recorder.kill()
            recorder.wait()
        api.stop()
        cluster_settings = Settings(
            redis_url=redis_cluster.url, redis_cluster=True, key_prefix=prefix
        )
        delete_prefix(sync_client(cluster_settings), prefix)
    assert victim not in redis_cluster.primaries()  # it rejoined as a replica


def test_the_live_stream_runs_on_two_api_replicas_on_the_cluster(
    redis_cluster: ClusterTopology, prefix: str
) -> None:
    a, b = start_replicas(child_env(redis_cluster.url, prefix, METRICS_REDIS_CLUSTER="true"), 2)

    async def scenario() -> tuple[Received, Received]:
        async with connect(a.ws_url) as ca, connect(b.ws_url) as cb:
            return await asyncio.gather(record(ca, 4), record(cb, 4))

    try:
        on_a, on_b = asyncio.run(scenario())
    finally:
        a.stop()
        b.stop()
        cluster_settings = Settings(
            redis_url=redis_cluster.url, redis_cluster=True, key_prefix=prefix
        )
        delete_prefix(sync_client(cluster_settings), prefix)
    for received in (on_a, on_b):
        types = {orjson.loads(text)["type"] for text in received.messages}
        assert len(received.messages) == 4 and types == {"metrics_update"}
        assert_strictly_increasing(received.timestamps)
    # Computed once a second by one replica, relayed to both by sharded pub/sub: same bytes.
    common = on_a.by_timestamp().keys() & on_b.by_timestamp().keys()
    assert len(common) >= 2
    assert all(on_a.by_timestamp()[t] == on_b.by_timestamp()[t] for t in common)
