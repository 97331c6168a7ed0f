"""Fixtures: a private redis-server per session, a key prefix per test, a store per backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from redis.cluster import RedisCluster

from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import sync_client
from metrics_store.settings import Settings
from tests.cluster_topology import ClusterTopology
from tests.harness import StoreHarness, make_harness
from tests.sentinel_topology import SentinelTopology
from workers.redis_process import RedisServerProcess

# Property tests (hypothesis): "fast" for every run, HYPOTHESIS_PROFILE=deep for a long hunt.
# Their tests share one store harness across examples (each example diffs the store itself),
# hence the suppressed function-scoped-fixture check; no deadline, as Redis sits in the loop.
_PROPERTY_DEFAULTS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
hypothesis_settings.register_profile("fast", max_examples=200, **_PROPERTY_DEFAULTS)  # type: ignore[arg-type]
hypothesis_settings.register_profile("deep", max_examples=5000, **_PROPERTY_DEFAULTS)  # type: ignore[arg-type]
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

# A moment in the middle of a 10-second bucket, far from any minute boundary.
T0 = 1_700_000_025.0


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServerProcess]:
    """One private redis-server on a free loopback port for the whole session (never 6379)."""
    server = RedisServerProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServerProcess) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def sentinel_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """Primary, replica and three sentinels for the session's runs through Sentinel.

    Tests that kill a server start a topology of their own: this one must stay whole.
    """
    topology = SentinelTopology(tmp_path_factory.mktemp("sentinel"))
    topology.start()
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """Three primaries and three replicas for the session's runs on Redis Cluster.

    A test that kills a node (test_cluster.py) restarts it and waits until every node reports
    `cluster_state:ok` with a synced replica per primary, so the tests after it find it whole.
    """
    cluster = ClusterTopology(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete one test's keys by SCAN, never FLUSHDB (on a cluster, primary by primary)."""
    try:
        if isinstance(client, RedisCluster):
            # Through a plain client per primary, closed here: the cluster client's own scan
            # can leave a connection to a node open after a failover (a ResourceWarning).
            for node in client.get_primaries():
                with redis.Redis(host=node.host, port=node.port) as direct:
                    _delete_keys(direct, prefix)
        else:
            _delete_keys(client, prefix)
    finally:
        client.close()


def _delete_keys(client: redis.Redis, prefix: str) -> None:
    for key in client.scan_iter(match=Keys(prefix).scan_pattern, count=1000):
        client.delete(key)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards by SCAN, never FLUSHDB."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    delete_prefix(redis.Redis.from_url(redis_url), name)


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    """The default settings on this test's prefix: events are checked against Redis's clock.

    A test that records under a moved clock (T0, years before Redis's) says so: it goes
    through make_harness, or takes a copy with clock_skew_tolerance_s=0 of its own."""
    return Settings(redis_url=redis_url, key_prefix=prefix, node="node-a")


def through_sentinel(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """`settings` pointed at the session's Sentinel topology; its keys deleted afterwards."""
    topology: SentinelTopology = request.getfixturevalue("sentinel_topology")
    through = {"redis_url": topology.url, "redis_sentinels": topology.sentinels_setting}
    sentinel_settings = Settings(**{**settings.model_dump(), **through})
    yield sentinel_settings
    delete_prefix(sync_client(sentinel_settings), settings.key_prefix)


def on_cluster(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """`settings` in cluster mode on the session's Redis Cluster; its keys deleted afterwards."""
    cluster: ClusterTopology = request.getfixturevalue("redis_cluster")
    cluster_settings = settings.replace(redis_url=cluster.url, redis_cluster=True)
    yield cluster_settings
    delete_prefix(sync_client(cluster_settings), settings.key_prefix)


@pytest.fixture(params=["single", "sentinel", "cluster"])
def topology_settings(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """`settings` for the session's single redis-server, then through Sentinel, then on the
    cluster."""
    if request.param == "single":
        yield settings
    elif request.param == "sentinel":
        yield from through_sentinel(request, settings)
    else:
        yield from on_cluster(request, settings)


@pytest.fixture(params=["redis", "fakeredis", "sentinel", "cluster"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[StoreHarness]:
    """The store on the real redis-server, on fakeredis (the embedded fallback), through
    Sentinel (a primary found by asking the sentinels) and on Redis Cluster (16 shards)."""
    if request.param in ("sentinel", "cluster"):
        through = through_sentinel if request.param == "sentinel" else on_cluster
        for topology_settings in through(request, settings):
            harness = make_harness(request.param, topology_settings, T0)
            yield harness
            harness.close()
        return
    harness = make_harness(request.param, settings, T0)
    yield harness
    harness.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
