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

from metrics_store.keys import Keys
from metrics_store.settings import Settings
from tests.harness import StoreHarness, make_harness
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
    # Tests move manual clocks years away from Redis's (T0): the store trusts its writers'
    # clocks, as for a replay. tests/test_clocks.py covers the default, Redis's clock.
    return Settings(redis_url=redis_url, key_prefix=prefix, node="node-a", clock_skew_tolerance_s=0)


@pytest.fixture(params=["redis", "fakeredis"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[StoreHarness]:
    """The store on the real redis-server, then again on fakeredis (the embedded fallback)."""
    harness = make_harness(request.param, settings, T0)
    yield harness
    harness.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
