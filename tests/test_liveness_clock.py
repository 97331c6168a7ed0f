"""One clock for liveness, across real processes: a process whose own clock is wrong neither
hides the others nor looks alive for longer than it is. Every heartbeat, freshness check and
prune follows Redis's clock; the processes below run with clocks hours or a minute off it
(tests/skewed_clock.py moves their wall clock, as a broken NTP would).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
import redis
from websockets.asyncio.client import connect

from metrics_store.clock import ManualClock
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.client import redis_now
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.processes import ApiProcess, CliProcess, child_env
from tests.waiting import wait_until

TWO_HOURS = 2 * 3600.0
# Quick samples; the default node TTL (5 s), so that a busy test machine delaying a sample by a
# second never drops a live node, while a stopped one is still gone well within the waits.
FAST = {"METRICS_SAMPLE_INTERVAL_S": "0.2", "METRICS_NODE_TTL_S": "5"}


class Skewed:
    """Starts a CLI process through tests/skewed_clock.py: its wall clock is `offset_s` off."""

    offset_s: float
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None

    def _popen(self) -> None:
        command = [sys.executable, "-m", "tests.skewed_clock", repr(self.offset_s), *self.args]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=self._stdout,  # type: ignore[attr-defined]  # CliProcess's files
            stderr=self._stderr,  # type: ignore[attr-defined]
        )


class SkewedSampler(Skewed, CliProcess):
    def __init__(self, env: Mapping[str, str], offset_s: float) -> None:
        super().__init__(["sampler"], env)
        self.offset_s = offset_s

    def start(self) -> None:
        self._popen()


class SkewedApi(Skewed, ApiProcess):
    def __init__(self, env: Mapping[str, str], offset_s: float) -> None:
        super().__init__(env)
        self.offset_s = offset_s

    def launch(self) -> None:
        self._popen()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def sampler_env(redis_url: str, prefix: str, node: str) -> dict[str, str]:
    return child_env(redis_url, prefix, METRICS_NODE=node, **FAST)


def resources(api: ApiProcess) -> dict[str, Any]:
    body: dict[str, Any] = api.get("/api/metrics/resources").json()
    return body


def node_names(api: ApiProcess) -> list[str]:
    return [node["node"] for node in resources(api)["nodes"]]


def health(api: ApiProcess) -> dict[str, Any]:
    body: dict[str, Any] = api.get("/api/metrics/health").json()
    return body


def test_a_sampler_two_hours_fast_prunes_nobody(
    redis_url: str, prefix: str, client: redis.Redis
) -> None:
    keys = Keys(prefix)
    honest_env = sampler_env(redis_url, prefix, "node-honest")
    fast_env = sampler_env(redis_url, prefix, "node-fast")
    with CliProcess(["sampler"], honest_env), SkewedSampler(fast_env, TWO_HOURS) as fast:
        with ApiProcess(child_env(redis_url, prefix, **FAST)) as api:
            wait_until(lambda: node_names(api) == ["node-fast", "node-honest"], what="both")
            # Each sample of the fast node prunes, in the same script as its write: read
            # right after each of its writes, when a prune by its clock would show.
            for _ in range(10):
                before = client.hget(keys.snapshots, "node-fast")
                wait_until(lambda: client.hget(keys.snapshots, "node-fast") != before)  # noqa: B023
                assert node_names(api) == ["node-fast", "node-honest"]
                assert client.zscore(keys.live_nodes, "node-honest") is not None
            assert health(api)["liveNodes"] == ["node-fast", "node-honest"]

            # Stopped, the fast node is gone within the TTL, not two hours later.
            fast.stop()
            wait_until(lambda: node_names(api) == ["node-honest"], what="the fast node gone")
            assert health(api)["liveNodes"] == ["node-honest"]
        assert "Traceback" not in fast.stderr_text()


def test_an_api_replica_a_minute_fast_sees_what_the_others_see(redis_url: str, prefix: str) -> None:
    env = child_env(redis_url, prefix, **FAST)
    with (
        CliProcess(["sampler"], sampler_env(redis_url, prefix, "node-a")),
        CliProcess(["sampler"], sampler_env(redis_url, prefix, "node-b")),
        ApiProcess(env) as honest,
        SkewedApi(env, 60.0) as fast,
    ):
        for api in (honest, fast):
            wait_until(lambda: node_names(api) == ["node-a", "node-b"], what="both nodes")  # noqa: B023

        async def with_a_client_on(api: ApiProcess) -> tuple[dict[str, Any], dict[str, Any]]:
            async with connect(api.ws_url) as ws:
                await ws.recv()  # connected and counted once the replica has beaten since
                wait_until(lambda: resources(honest)["activeConnections"] == 1)
                wait_until(lambda: resources(fast)["activeConnections"] == 1)
                return resources(fast), health(fast)

        seen, status = asyncio.run(with_a_client_on(honest))
        assert [node["node"] for node in seen["nodes"]] == ["node-a", "node-b"]
        assert status["liveNodes"] == ["node-a", "node-b"]
        assert status["liveReplicas"] == 2
        assert sorted(p["roles"][0] for p in status["processes"]) == [
            "api",
            "api",
            "sampler",
            "sampler",
        ]
        wait_until(lambda: health(honest)["liveReplicas"] == 2, what="two replicas")

        # Killed, the fast replica stops counting within the TTL, not a minute later.
        fast.kill()
        wait_until(lambda: health(honest)["liveReplicas"] == 1, what="the fast replica gone")
        assert sorted(p["roles"][0] for p in health(honest)["processes"]) == [
            "api",
            "sampler",
            "sampler",
        ]


def test_a_replays_heartbeats_follow_redis_clock_too(
    redis_url: str, prefix: str, client: redis.Redis
) -> None:
    # Tolerance 0 trusts the writer's clock for its events (a replay a year back), never for
    # liveness: its beats and records are stamped by Redis's clock.
    replay = Settings(
        redis_url=redis_url, key_prefix=prefix, node="node-replay", clock_skew_tolerance_s=0
    )
    keys = Keys(prefix)
    before = redis_now(client)
    collector = MetricsCollector(replay, clock=ManualClock(before - 365 * 86400))
    try:
        collector.record_query("Q2", 1.0, 1, 1.0)
        collector.update_model_availability("Q2", 1, 1)
        collector.flush(timeout_s=20)

        def records() -> list[float]:
            found = [orjson.loads(raw)["at"] for raw in client.hgetall(keys.collectors).values()]
            return found + [
                orjson.loads(raw)["at"] for raw in client.hgetall(keys.processes).values()
            ]

        # The upkeep thread beats on its own schedule: wait for its first records.
        wait_until(lambda: len(records()) == 2, 10, "the collector's first beat")
        after = redis_now(client)
        assert before <= (client.zscore(keys.live_nodes, "node-replay") or 0.0) <= after
        assert all(before <= at <= after for at in records())
    finally:
        collector.close()
