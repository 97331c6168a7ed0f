"""Fixtures: a private redis-server per session, a key prefix per test, a store per backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from metrics_store.keys import Keys
from metrics_store.settings import Settings
from tests.harness import StoreHarness, make_harness
from workers.redis_process import RedisServerProcess

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


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards by SCAN, never FLUSHDB."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=Keys(name).scan_pattern, count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=prefix, node="node-a")


@pytest.fixture(params=["redis", "fakeredis"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[StoreHarness]:
    """The store on the real redis-server, then again on fakeredis (the embedded fallback)."""
    harness = make_harness(request.param, settings, T0)
    yield harness
    harness.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
