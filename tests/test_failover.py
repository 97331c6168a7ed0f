"""Redis Sentinel failover with real processes: the primary SIGKILLed under load.

Each test starts a topology of its own (primary, replica, three sentinels), since it breaks
it. The measured timeline is printed (`pytest -s`) and reported in docs/high-availability.md.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect

from api.main import create_app
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import sync_client
from metrics_store.settings import Settings
from tests.processes import ApiProcess, CliProcess, child_env
from tests.sentinel_topology import SentinelTopology, role
from tests.waiting import wait_until
from workers.redis_process import free_port

# Two recorders, each a query and a routing decision per step, at a steady rate.
RECORDER = textwrap.dedent(
    """
    import sys, time
    from metrics_store import get_metrics_collector
    count, rate = int(sys.argv[1]), float(sys.argv[2])
    collector = get_metrics_collector()
    started = time.monotonic()

    def pace(step):
        # The load itself: a steady rate, so the kill lands while events keep coming.
        time.sleep(max(0.0, started + (step + 1) / rate - time.monotonic()))

    for i in range(count):
        collector.record_query("Q3", 10.0 + i % 7, 5, 4.0, is_error=(i % 13 == 0))
        collector.record_routing_decision("MODERATE", "Q3", 5.0, 1.0)
        pace(i)
    collector.flush(timeout_s=100)
    print(collector.written_events, collector.dropped_events, flush=True)
    """
)
PER_PROCESS, RATE = 900, 300.0  # three seconds of steady traffic from each recorder
# With ACK=0 the loss is what the primary acknowledged but had not yet sent to the replica.
# A healthy replica trails by less than one batch round trip, so per collector that is at
# most the batch in flight (docs/high-availability.md); small batches keep the bound tight.
BATCH_EVENTS = 100
ACK0_LOSS_BOUND_STEPS = 2 * BATCH_EVENTS  # two recorders; a step is a query and a decision


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    with SentinelTopology(tmp_path / "topology") as started:
        yield started


def sentinel_env(topology: SentinelTopology, prefix: str, **extra: str) -> dict[str, str]:
    return child_env(
        topology.url,
        prefix,
        METRICS_REDIS_SENTINELS=topology.sentinels_setting,
        # Short retry waits: the backoff cap, not Sentinel, would otherwise set the gap.
        METRICS_RETRY_MAX_BACKOFF_S="0.5",
        **extra,
    )


def sentinel_settings(topology: SentinelTopology, prefix: str) -> Settings:
    return Settings(
        redis_url=topology.url, redis_sentinels=topology.sentinels_setting, key_prefix=prefix
    )


def start_recorders(env: dict[str, str]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(PER_PROCESS), str(RATE)],
            env={**env, "METRICS_NODE": f"recorder-{n}"},
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]


def wait_mid_stream(recorders: list[subprocess.Popen[str]], written: Callable[[], int]) -> None:
    """Until a third of the traffic is written, the recorders still recording."""
    wait_until(lambda: written() >= 2 * PER_PROCESS // 3, 30, "a third of the traffic")
    assert all(recorder.poll() is None for recorder in recorders)  # the kill lands mid-stream


def stream_length(settings: Settings) -> int:
    """Queries in the store's query stream (one primary: Sentinel or a single server)."""
    client = sync_client(settings)
    try:
        return int(client.xlen(Keys(settings.key_prefix).query_stream))
    finally:
        client.close()


def finish(recorders: list[subprocess.Popen[str]]) -> None:
    outputs = [recorder.communicate(timeout=110)[0].split() for recorder in recorders]
    assert [recorder.returncode for recorder in recorders] == [0, 0]
    assert [int(dropped) for _, dropped in outputs] == [0, 0]


def totals(settings: Settings) -> dict[str, int]:
    """Queries and decisions in every place they show: streams and each endpoint."""
    keys = Keys(settings.key_prefix)
    client = sync_client(settings)
    try:
        streams = {
            "query stream": client.xlen(keys.query_stream),
            "routing stream": client.xlen(keys.routing_stream),
        }
    finally:
        client.close()
    with TestClient(create_app(settings)) as api:
        queries = api.get("/api/metrics/queries").json()["totalQueries"]
        tiers = sum(t["requestCount"] for t in api.get("/api/metrics/tiers").json()["tiers"])
        routing = api.get("/api/metrics/routing").json()["accuracyMetrics"]["totalDecisions"]
    return {**streams, "/queries": queries, "/tiers": tiers, "/routing": routing}


def kill_primary(topology: SentinelTopology) -> float:
    """SIGKILL the primary; the seconds until every sentinel names the replica instead."""
    old_port = topology.primary_port()
    assert old_port == topology.primary.port
    topology.primary.kill()
    return topology.wait_failover(old_port)


@pytest.mark.timeout(180)
def test_kill_with_one_replica_ack_loses_no_acknowledged_event(
    topology: SentinelTopology, prefix: str
) -> None:
    env = sentinel_env(topology, prefix, METRICS_REDIS_MIN_REPLICAS_ACK="1")
    recorders = start_recorders(env)
    try:
        wait_mid_stream(recorders, lambda: stream_length(sentinel_settings(topology, prefix)))
        failover_s = kill_primary(topology)
        # With one replica promoted, no replica is left to acknowledge: writes wait (and the
        # recorders keep buffering) until the old primary is back as the new one's replica.
        topology.primary.start()
        wait_until(lambda: role(topology.primary) == "slave", 30, "the old primary to rejoin")
        finish(recorders)
    finally:
        for recorder in recorders:
            recorder.kill()
            recorder.wait()
    print(f"\nACK=1: failover decided {failover_s:.2f} s after the kill")
    expected = 2 * PER_PROCESS
    assert set(totals(sentinel_settings(topology, prefix)).values()) == {expected}


@pytest.mark.timeout(180)
def test_a_forced_failover_with_one_of_two_replica_acks_loses_no_acknowledged_event(
    tmp_path: Path, prefix: str
) -> None:
    # SENTINEL FAILOVER promotes one replica while the old primary still takes writes and the
    # other replica still follows it, so WAIT 1 acknowledges batches that the resync then
    # drops (docs/reliability.md, "Fault soak"): the collectors must write them again.
    with SentinelTopology(tmp_path / "topology", replicas=2) as topology:
        env = sentinel_env(topology, prefix, METRICS_REDIS_MIN_REPLICAS_ACK="1")
        recorders = start_recorders(env)
        try:
            wait_mid_stream(recorders, lambda: stream_length(sentinel_settings(topology, prefix)))
            old_port = topology.primary_port()
            sentinel = redis.Redis(host="127.0.0.1", port=topology.sentinels[0][1])
            sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
            sentinel.close()
            topology.wait_failover(old_port)
            finish(recorders)
        finally:
            for recorder in recorders:
                recorder.kill()
                recorder.wait()
        expected = 2 * PER_PROCESS
        assert set(totals(sentinel_settings(topology, prefix)).values()) == {expected}


@pytest.mark.timeout(180)
def test_kill_without_acks_loses_at_most_the_replication_lag(
    topology: SentinelTopology, prefix: str
) -> None:
    env = sentinel_env(topology, prefix, METRICS_BATCH_MAX_EVENTS=str(BATCH_EVENTS))
    recorders = start_recorders(env)
    try:
        wait_mid_stream(recorders, lambda: stream_length(sentinel_settings(topology, prefix)))
        failover_s = kill_primary(topology)
        finish(recorders)  # the promoted replica takes writes at once: no replica needed
    finally:
        for recorder in recorders:
            recorder.kill()
            recorder.wait()
    found = totals(sentinel_settings(topology, prefix))
    recorded = 2 * PER_PROCESS
    print(f"\nACK=0: failover decided {failover_s:.2f} s after the kill; {found} of {recorded}")
    for where, total in found.items():
        assert total <= recorded, where  # never counted twice
        assert recorded - total <= ACK0_LOSS_BOUND_STEPS, where


@dataclass
class Timeline:
    """Seconds after the kill at which each thing happened (None: not seen)."""

    kill_at: float
    first_write_s: float | None = None
    api_statuses: list[tuple[float, int]] = field(default_factory=list)
    ws_updates_s: list[float] = field(default_factory=list)

    def since_kill(self) -> float:
        return time.monotonic() - self.kill_at

    @property
    def api_back_s(self) -> float | None:
        failing = [t for t, status in self.api_statuses if status != 200]
        after = [t for t, status in self.api_statuses if status == 200 and t > max(failing or [0])]
        return after[0] if failing and after else None


def watch_writes(settings: Settings, timeline: Timeline, stop: threading.Event) -> None:
    """Write a counter every 50 ms through the sentinels; note the first success after the kill."""
    client = sync_client(settings)
    key = f"{Keys(settings.key_prefix).root}:failover-probe"
    try:
        while not stop.is_set() and timeline.first_write_s is None:
            try:
                client.incr(key)  # started after the kill: any success is on the new primary
                timeline.first_write_s = timeline.since_kill()
            except redis.RedisError:
                pass
            stop.wait(0.05)
    finally:
        client.close()


# How often the REST probe asks through the gap: the resolution of the measured timeline.
PROBE_INTERVAL_S = 0.1


async def watch_api(
    api: ApiProcess, timeline: Timeline, duration_s: float, live: asyncio.Event
) -> bool:
    """Poll REST and read the WebSocket through the gap; whether the WebSocket stayed open.

    `live` is set once the WebSocket has its first update: the moment to kill the primary."""
    async with connect(api.ws_url) as ws, httpx.AsyncClient(timeout=5.0) as http:
        await ws.recv()  # connected and live before the kill

        async def poll() -> None:
            while timeline.since_kill() < duration_s:
                response = await http.get(f"{api.base_url}/api/metrics/queries")
                timeline.api_statuses.append((timeline.since_kill(), response.status_code))
                await asyncio.sleep(PROBE_INTERVAL_S)  # a probe's period, not a wait

        async def read() -> None:
            while timeline.since_kill() < duration_s:
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                timeline.ws_updates_s.append(timeline.since_kill())

        timeline.kill_at = time.monotonic()
        live.set()
        await asyncio.gather(poll(), read())
        return ws.close_code is None


@pytest.mark.timeout(180)
def test_api_and_websocket_recover_and_the_old_primary_rejoins_as_a_replica(
    topology: SentinelTopology, prefix: str
) -> None:
    settings = sentinel_settings(topology, prefix)
    api = ApiProcess(sentinel_env(topology, prefix))
    api.start()
    stop = threading.Event()
    timeline = Timeline(kill_at=time.monotonic() + 3600)
    try:
        prober = threading.Thread(target=watch_writes, args=(settings, timeline, stop))

        async def scenario() -> bool:
            live = asyncio.Event()
            watching = asyncio.create_task(watch_api(api, timeline, 12.0, live))
            await live.wait()
            topology.primary.kill()
            prober.start()
            return await watching

        ws_stayed_open = asyncio.run(scenario())
        stop.set()
        prober.join()
    finally:
        stop.set()
        api.stop()
    print(
        f"\nfirst write {timeline.first_write_s} s, API back {timeline.api_back_s} s, "
        f"WebSocket updates after the kill at {[round(t, 2) for t in timeline.ws_updates_s]}"
    )
    assert ws_stayed_open
    assert {status for _, status in timeline.api_statuses} <= {200, 503}
    assert timeline.first_write_s is not None  # writes reached the promoted replica
    assert timeline.api_statuses[-1][1] == 200  # the API answers again
    # Live again after the gap: the stream goes on once the new primary takes writes.
    assert [t for t in timeline.ws_updates_s if t > timeline.first_write_s]

    # The old primary comes back empty and alone; the sentinels make it a replica of the new
    # one. Meanwhile nobody writes to it: it holds no key until it copies the new primary.
    topology.primary.start()
    old = redis.Redis(host="127.0.0.1", port=topology.primary.port, socket_timeout=1.0)
    try:

        def rejoined() -> bool:
            if role(topology.primary) == "slave":
                return True
            assert old.dbsize() == 0, "a process wrote to the demoted primary"
            return False

        wait_until(rejoined, 30, "the old primary to rejoin as a replica")
    finally:
        old.close()
    assert topology.primary_port() == topology.replica.port
    collector = MetricsCollector(settings)  # and the store works on as before
    for _ in range(5):
        collector.record_query("Q2", 10.0, 1, 1.0)
    collector.flush(timeout_s=20)
    collector.close()
    assert totals(settings)["/queries"] == 5


@pytest.mark.timeout(120)
def test_a_demoted_primary_that_stays_up_gets_no_more_writes(
    topology: SentinelTopology, prefix: str
) -> None:
    settings = sentinel_settings(topology, prefix)
    collector = MetricsCollector(settings)
    try:
        for _ in range(10):
            collector.record_query("Q2", 10.0, 1, 1.0)
        collector.flush(timeout_s=10)
        # A graceful failover: the old primary lives on as a replica, and the collector's
        # pooled connections still point at it. Its first write there gets READONLY, which
        # must send the pool to the sentinels for the new primary.
        old_port = topology.primary_port()
        sentinel = redis.Redis(host="127.0.0.1", port=topology.sentinels[0][1])
        sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
        sentinel.close()
        topology.wait_failover(old_port)
        wait_until(lambda: role(topology.primary) == "slave", 20, "the old primary's demotion")
        for _ in range(10):
            collector.record_query("Q2", 10.0, 1, 1.0)
        collector.flush(timeout_s=20)
    finally:
        collector.close()
    assert collector.dropped_events == 0
    found = totals(settings)
    assert [found[where] for where in ("query stream", "/queries", "/tiers")] == [20, 20, 20]


def record_and_flush(settings: Settings, queries: int) -> None:
    collector = MetricsCollector(settings)
    try:
        for _ in range(queries):
            collector.record_query("Q2", 10.0, 1, 1.0)
        collector.flush(timeout_s=30)  # returned: these queries are acknowledged
    finally:
        collector.close()


def api_body(url: str) -> dict[str, Any]:
    """The JSON of a 200, or {} (a 503 in the gap, or `up` still starting)."""
    try:
        response = httpx.get(url, timeout=5.0)
    except httpx.TransportError:
        return {}
    body: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return body


@pytest.mark.timeout(180)
def test_up_pointed_at_sentinels_survives_a_failover(
    topology: SentinelTopology, prefix: str, tmp_path: Path
) -> None:
    port, node, node_ttl_s = free_port(), "up-node", 1.5
    env = sentinel_env(topology, prefix, METRICS_NODE=node, METRICS_SAMPLE_INTERVAL_S="0.2",
                       METRICS_NODE_TTL_S=str(node_ttl_s))  # fmt: skip
    args = ["up", "--no-demo", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    api = f"http://127.0.0.1:{port}/api/metrics"
    settings = sentinel_settings(topology, prefix)

    def sampled() -> bool:
        return node in [n["node"] for n in api_body(f"{api}/resources").get("nodes", [])]

    def counted() -> bool:
        return bool(api_body(f"{api}/queries").get("totalQueries") == 50)

    with CliProcess(args, env) as up:
        wait_until(sampled, 60, "up's sampler node")
        # ACK=1 before the kill: flush() returns once the replica holds the queries too.
        record_and_flush(settings.replace(redis_min_replicas_ack=1), 20)
        kill_primary(topology)
        promoted_at = time.monotonic()
        record_and_flush(settings, 30)  # no replica is left to acknowledge: ACK=0 from here
        wait_until(counted, 30, "up's API to count every acknowledged query")
        # Fresh only if written after the kill: the sampler writes to the new primary.
        wait_until(lambda: time.monotonic() - promoted_at > node_ttl_s and sampled(), 30,
                   "up's sampler node live again")  # fmt: skip
        assert up.process is not None and up.process.poll() is None, up.stderr_text()[-2000:]
