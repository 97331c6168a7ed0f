"""Refusals that hit every batch are waited out; a batch refused for its content is
dead-lettered and counted; the heartbeat never waits for the batch in hand.

Each test runs its own redis-server, since it turns the server's limits (maxmemory,
min-replicas-to-write) against every client.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.clock import ManualClock, SystemClock
from metrics_store.errors import EventsLost
from metrics_store.loops import PROCESS_LOOPS
from metrics_store.record.collector import MetricsCollector
from metrics_store.record.deadletter import DeadLetters
from metrics_store.redis.client import redis_now
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.processes import child_env
from tests.waiting import wait_until
from workers.redis_process import RedisServerProcess

# Longer than the flusher once kept a refused batch (10 tries, about 3 s) before dropping it.
REFUSAL_S = 10.0
EVENTS = 100


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServerProcess]:
    process = RedisServerProcess(tmp_path / "redis")
    process.start()
    yield process
    process.stop()


def flusher_errors() -> int:
    return int(PROCESS_LOOPS.snapshot().get("collector-flusher", {}).get("errors", 0))  # type: ignore[call-overload]


def stored_queries(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen(Keys(prefix).query_stream))
    finally:
        client.close()


def record_through_a_refusal(
    server: RedisServerProcess, prefix: str, refuse: dict[str, Any], allow: dict[str, Any]
) -> MetricsCollector:
    """Record EVENTS while Redis refuses every write for REFUSAL_S, then lift the refusal."""
    admin = redis.Redis.from_url(server.url)
    settings = Settings(redis_url=server.url, key_prefix=prefix, retry_max_backoff_s=0.2)
    collector = MetricsCollector(settings)
    collector.flush(timeout_s=10)  # connected and idle when the refusal starts
    before = flusher_errors()
    for name, value in refuse.items():
        admin.config_set(name, value)
    started = time.monotonic()
    for i in range(EVENTS):
        collector.record_query("Q2", 100.0 + i, 10, 50.0)
    with pytest.raises(TimeoutError):  # nothing is written while refused, nothing dropped
        collector.flush(timeout_s=1.0)
    # Refused for longer, and more often, than a refused batch was once kept.
    wait_until(
        lambda: flusher_errors() - before > 10 and time.monotonic() - started > REFUSAL_S,
        REFUSAL_S + 20,
        "the refusal to outlast the old retry limit",
    )
    assert collector.dropped_events == 0
    for name, value in allow.items():
        admin.config_set(name, value)
    admin.close()
    return collector


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "limit",
    ["maxmemory", "min-replicas-to-write"],
    ids=["out of memory (OOM)", "too few replicas (NOREPLICAS)"],
)
def test_a_refusal_of_every_write_for_ten_seconds_loses_nothing(
    server: RedisServerProcess, prefix: str, limit: str
) -> None:
    collector = record_through_a_refusal(server, prefix, {limit: "1"}, {limit: "0"})
    try:
        collector.flush(timeout_s=30)
        assert (collector.written_events, collector.dropped_events) == (EVENTS, 0)
        assert stored_queries(server.url, prefix) == EVENTS
    finally:
        collector.close()


class CorruptsBatches:
    """Wraps an encoder's `encode`: while `on`, the arguments of each batch whose events
    `when` picks break the ingest script."""

    def __init__(
        self, encode: Callable[..., Any], when: Callable[[list[Any]], bool] = lambda _: True
    ) -> None:
        self.encode = encode
        self.when = when
        self.on = True

    def __call__(self, events: list[Any], *args: Any, **kwargs: Any) -> Any:
        encoded = self.encode(events, *args, **kwargs)
        if self.on and self.when(events):
            encoded.args[:] = ["not a batch"] * len(encoded.args)
        return encoded


@pytest.mark.timeout(60)
def test_a_batch_refused_for_its_content_is_dead_lettered_and_counted(
    server: RedisServerProcess, prefix: str
) -> None:
    settings = Settings(redis_url=server.url, key_prefix=prefix, retry_max_backoff_s=0.1)
    collector = MetricsCollector(settings)
    try:
        [encoder] = collector._flusher._encoders  # one shard: single Redis
        corrupt = CorruptsBatches(encoder.encode)
        encoder.encode = corrupt  # type: ignore[method-assign]
        for i in range(7):
            collector.record_query("Q3", 10.0 + i, 3, 2.0)
        with pytest.raises(EventsLost):
            collector.flush(timeout_s=20)
        assert collector.dropped_events == 7
        corrupt.on = False
        client = redis.Redis.from_url(server.url)
        [letter] = list(DeadLetters(client, settings).read())
        assert len(letter.events) == 7 and letter.node == settings.node
        assert "ResponseError" in letter.error
        assert stored_queries(server.url, prefix) == 0  # nothing of it was written
        # Told with its reason, by /health and /metrics, once the collector has beaten.
        with TestClient(create_app(settings, SystemClock())) as api:
            wait_until(lambda: dropped_by(api) == {"dead_letter": 7, "buffer_full": 0}, 10,
                       "the collector's beat with its drop")  # fmt: skip
            exposition = api.get("/metrics").text
        assert 'reason="dead_letter"} 7.0' in exposition
    finally:
        collector.close()
    # Once the cause is fixed, the command writes them again and empties the stream.
    env = child_env(server.url, prefix)
    listed = run_cli(["replay-deadletter", "--list"], env)
    assert listed.returncode == 0 and "1 batches" in listed.stdout and "7 events" in listed.stdout
    replayed = run_cli(["replay-deadletter"], env)
    assert replayed.returncode == 0, replayed.stderr
    assert "7 events written, 0 refused again" in replayed.stdout
    assert stored_queries(server.url, prefix) == 7
    assert client.xlen(Keys(prefix).deadletter) == 0
    client.close()


def dropped_by(api: TestClient) -> dict[str, int] | None:
    collectors = api.get("/api/metrics/health").json()["collectors"]
    return collectors[0]["droppedByReason"] if collectors else None


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "workers.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(60)
def test_the_heartbeat_stays_fresh_while_a_batch_waits_for_its_replica(
    server: RedisServerProcess, prefix: str
) -> None:
    settings = Settings(
        redis_url=server.url,
        key_prefix=prefix,
        node="waiting-node",
        redis_min_replicas_ack=1,
        redis_replicas_ack_timeout_ms=100,
        retry_max_backoff_s=0.2,
    )
    client = redis.Redis.from_url(server.url)
    collector = MetricsCollector(settings)
    try:
        collector.record_query("Q2", 10.0, 1, 1.0)  # no replica: this batch waits for ever
        started = time.monotonic()
        wait_until(
            lambda: time.monotonic() - started > 2 * settings.liveness.node_ttl_s,
            4 * settings.liveness.node_ttl_s,
            "the batch to wait past the node's TTL",
        )
        assert collector.written_events == 0  # still waiting for its acknowledgement
        beat_s = client.zscore(Keys(prefix).live_nodes, "waiting-node")
        assert beat_s is not None
        assert redis_now(client) - beat_s < settings.liveness.node_ttl_s
    finally:
        collector.close()
        client.close()


@pytest.mark.timeout(60)
def test_events_refused_for_their_clock_stay_counted_when_their_batch_is_lost(
    server: RedisServerProcess, prefix: str
) -> None:
    """The refused count rides with its batch; a batch lost after its events were set aside
    hands the count to the next batch, so Redis still counts every refused event."""
    settings = Settings(redis_url=server.url, key_prefix=prefix, retry_max_backoff_s=0.1)
    clock = ManualClock(time.time() + 7200)  # two hours fast: every event is refused
    collector = MetricsCollector(settings, clock=clock)
    client = redis.Redis.from_url(server.url)
    try:
        [encoder] = collector._flusher._encoders
        corrupt = CorruptsBatches(encoder.encode, when=lambda events: not events)
        encoder.encode = corrupt  # type: ignore[method-assign]
        for i in range(5):
            collector.record_query("Q2", 10.0 + i, 1, 1.0)
        with pytest.raises(EventsLost):  # refused for the clock; its empty batch then lost
            collector.flush(timeout_s=20)
        assert collector.refused_events == 5
        assert client.hget(Keys(prefix).refused, settings.node) is None
        corrupt.on = False
        clock.advance(-7200)
        collector.record_query("Q2", 20.0, 1, 1.0)
        collector.flush(timeout_s=20)
        assert client.hget(Keys(prefix).refused, settings.node) == b"5"
    finally:
        collector.close()
        client.close()


@pytest.mark.timeout(60)
def test_a_refusal_by_the_acl_is_waited_out_not_dead_lettered(
    server: RedisServerProcess, prefix: str
) -> None:
    """The ACL refuses every batch alike (it changed): wait for the operator, lose nothing."""
    admin = redis.Redis.from_url(server.url)
    admin.acl_setuser("writer", enabled=True, passwords=["+writer-secret"], keys=["*"],
                      channels=["*"], commands=["+@all"])  # fmt: skip
    url = server.url.replace("redis://", "redis://writer:writer-secret@")
    settings = Settings(redis_url=url, key_prefix=prefix, retry_max_backoff_s=0.1)
    collector = MetricsCollector(settings)
    try:
        collector.flush(timeout_s=10)
        before = flusher_errors()
        # (enabled=True each time: redis-py's acl_setuser otherwise turns the user off)
        admin.acl_setuser("writer", enabled=True, commands=["-evalsha", "-eval"])
        for i in range(5):
            collector.record_query("Q2", 10.0 + i, 1, 1.0)
        wait_until(lambda: flusher_errors() - before > 5, 30, "the ACL to refuse batches")
        assert collector.dropped_events == 0
        admin.acl_setuser("writer", enabled=True, commands=["+@all"])
        collector.flush(timeout_s=30)
        assert (collector.written_events, collector.dropped_events) == (5, 0)
        assert admin.xlen(Keys(prefix).deadletter) == 0
    finally:
        collector.close()
        admin.close()


@pytest.mark.timeout(60)
def test_a_batch_refused_partway_through_is_counted_lost_not_written(
    server: RedisServerProcess, prefix: str
) -> None:
    """Redis does not roll back a script that fails partway: the retry finds the batch's
    marker, and the batch, stored in part, must be owned up to, not reported written."""
    client = redis.Redis.from_url(server.url)
    client.set(Keys(prefix).routing_stream, "not a stream")  # the routing XADD will fail
    settings = Settings(redis_url=server.url, key_prefix=prefix, retry_max_backoff_s=0.1)
    collector = MetricsCollector(settings)
    try:
        collector.record_query("Q2", 10.0, 1, 1.0)
        collector.record_routing_decision("SIMPLE", "Q2", 0.5, 1.0)
        with pytest.raises(EventsLost):
            collector.flush(timeout_s=20)
        assert (collector.written_events, collector.dropped_events) == (0, 2)
        assert client.xlen(Keys(prefix).deadletter) == 0  # a replay would count part twice
    finally:
        collector.close()
        client.close()
