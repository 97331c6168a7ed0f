"""The live stream across real processes: two uvicorn replicas on one private Redis."""

from __future__ import annotations

import asyncio
import calendar
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from metrics_store.live.replicas import replica_pid
from metrics_store.redis.keys import Keys
from tests.processes import ApiProcess, CliProcess, child_env, close_code, start_replicas
from tests.waiting import wait_for, wait_until
from workers.redis_process import RedisServerProcess, free_port

# The guide's "WebSocket Testing (Python)" example, verbatim; only its address is replaced.
GUIDE_EXAMPLE = """
import asyncio
import websockets
import json

async def test_ws():
    async with websockets.connect('ws://localhost:8000/api/metrics/ws') as ws:
        for i in range(5):
            msg = await ws.recv()
            data = json.loads(msg)
            print(f"Update {i+1}: {data['type']} at {data['timestamp']}")

asyncio.run(test_ws())
"""


@dataclass
class Received:
    """What one client got: the text of each message, in order."""

    messages: list[str] = field(default_factory=list)

    @property
    def timestamps(self) -> list[str]:
        return [orjson.loads(text)["timestamp"] for text in self.messages]

    @property
    def ticks(self) -> list[int]:
        return [tick_of(timestamp) for timestamp in self.timestamps]

    def by_timestamp(self) -> dict[str, str]:
        return {orjson.loads(text)["timestamp"]: text for text in self.messages}


async def record(ws: ClientConnection, count: int) -> Received:
    """The client's next `count` messages (each within a few ticks, or the test fails)."""
    received = Received()
    while len(received.messages) < count:
        text = await asyncio.wait_for(ws.recv(), 10.0)
        assert isinstance(text, str)  # a text frame, as browsers' JSON.parse needs
        received.messages.append(text)
    return received


async def next_after(ws: ClientConnection, timestamp: str, timeout_s: float) -> str:
    """The first update newer than `timestamp` (its timestamp), within `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            newer = orjson.loads(await ws.recv())["timestamp"]
            if newer > timestamp:
                return str(newer)


def tick_of(timestamp: str) -> int:
    return calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))


def active_connections(api: ApiProcess) -> int:
    return int(api.get("/api/metrics/resources").json()["activeConnections"])


def wait_for_connections(api: ApiProcess, expected: int, timeout_s: float) -> None:
    what = f"activeConnections to be {expected}"
    wait_for(lambda: active_connections(api), lambda seen: seen == expected, timeout_s, what)


def down(api: ApiProcess) -> bool:
    """The replica answers 503: it has seen Redis go."""
    return api.get("/api/metrics/queries").status_code == 503


def assert_strictly_increasing(timestamps: list[str]) -> None:
    assert all(a < b for a, b in itertools.pairwise(timestamps)), timestamps


@pytest.fixture(scope="module")
def pair(redis_server: RedisServerProcess) -> Iterator[tuple[ApiProcess, ApiProcess]]:
    """Two replicas on the session Redis, shared by the tests that kill nothing."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    a, b = start_replicas(child_env(redis_server.url, prefix), 2)
    yield a, b
    a.stop()
    b.stop()
    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter(match=Keys(prefix).scan_pattern):
        client.delete(key)
    client.close()


def test_both_replicas_send_the_same_bytes_once_a_second(
    pair: tuple[ApiProcess, ApiProcess],
) -> None:
    a, b = pair

    async def scenario() -> tuple[Received, Received]:
        # A client that never reads sits on replica a all along: it must not slow a's others.
        slow = connect(a.ws_url, max_queue=1, close_timeout=0.5)
        async with slow, connect(a.ws_url) as ca, connect(b.ws_url) as cb:
            return await asyncio.gather(record(ca, 5), record(cb, 5))

    on_a, on_b = asyncio.run(scenario())
    for received in (on_a, on_b):
        assert_strictly_increasing(received.timestamps)
        # One update per second's tick: a client may miss a tick under load (latest wins),
        # never two in a row, the slow client on a notwithstanding.
        gaps = [t2 - t1 for t1, t2 in itertools.pairwise(received.ticks)]
        assert set(gaps) <= {1, 2}, received.timestamps
    common = on_a.by_timestamp().keys() & on_b.by_timestamp().keys()
    assert len(common) >= 3
    for timestamp in common:
        assert on_a.by_timestamp()[timestamp] == on_b.by_timestamp()[timestamp]


def test_the_guides_python_example_runs_unchanged_against_either_replica(
    pair: tuple[ApiProcess, ApiProcess],
) -> None:
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                GUIDE_EXAMPLE.replace("localhost:8000", f"127.0.0.1:{api.port}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for api in pair
    ]
    for run in runs:
        out, err = run.communicate(timeout=20)
        assert run.returncode == 0, err
        lines = out.splitlines()
        assert [line.split(":")[0] for line in lines] == [f"Update {i}" for i in range(1, 6)]
        assert all(" metrics_update at " in line and line.endswith("Z") for line in lines)


def test_misbehaving_clients_are_closed_alone(pair: tuple[ApiProcess, ApiProcess]) -> None:
    a, _ = pair

    async def scenario() -> None:
        async with connect(a.ws_url) as big, connect(a.ws_url) as binary, connect(a.ws_url) as ok:
            last = orjson.loads(await ok.recv())["timestamp"]
            await ok.send("hello")  # ignored
            await big.send("x" * 10_000)
            await binary.send(b"\x00\xff\x00")
            assert await close_code(big) == 1009
            assert await close_code(binary) == 1003
            await next_after(ok, last, 3.0)

    asyncio.run(scenario())


def test_active_connections_count_the_clients_of_every_replica(
    pair: tuple[ApiProcess, ApiProcess],
) -> None:
    a, b = pair

    async def scenario() -> None:
        async with connect(a.ws_url), connect(a.ws_url), connect(b.ws_url):
            await asyncio.to_thread(wait_for_connections, a, 3, 4.0)
            await asyncio.to_thread(wait_for_connections, b, 3, 4.0)
        await asyncio.to_thread(wait_for_connections, b, 0, 4.0)

    asyncio.run(scenario())


def test_killing_the_ticking_replica_leaves_the_stream_running(redis_url: str, prefix: str) -> None:
    env = child_env(redis_url, prefix, METRICS_NODE_TTL_S="2")
    replicas = start_replicas(env, 2)
    by_pid = {api.pid: api for api in replicas}
    client = redis.Redis.from_url(redis_url)
    try:
        asyncio.run(_kill_the_ticker_scenario(replicas, by_pid, client, Keys(prefix)))
    finally:
        client.close()
        for api in replicas:
            api.stop()


async def _kill_the_ticker_scenario(
    replicas: list[ApiProcess], by_pid: dict[int, ApiProcess], client: redis.Redis, keys: Keys
) -> None:
    a, b = replicas
    async with connect(a.ws_url) as ca, connect(b.ws_url) as cb, connect(b.ws_url) as cb2:
        await asyncio.to_thread(wait_for_connections, a, 3, 4.0)
        last = orjson.loads(await ca.recv())["timestamp"]
        await cb2.recv()
        winner_id = client.get(keys.tick_lock(tick_of(last)))
        assert winner_id is not None
        ticker = by_pid[replica_pid(winner_id.decode())]
        survivor, survivor_ws, clients_left = (b, cb, 2) if ticker is a else (a, ca, 1)
        last = orjson.loads(await survivor_ws.recv())["timestamp"]
        ticker.kill()  # SIGKILL: no goodbye, no deregistration
        # The next update may be the dead ticker's last; the one after is the survivor's own.
        newer = await next_after(survivor_ws, last, 5.0)
        taken_over = await next_after(survivor_ws, newer, 5.0)
        assert tick_of(taken_over) - tick_of(last) <= 4  # the stream skipped a tick or two
        winner_id = client.get(keys.tick_lock(tick_of(taken_over)))
        assert winner_id is not None and replica_pid(winner_id.decode()) == survivor.pid
        # The dead replica's clients stop counting once its beat is older than the TTL (2 s).
        await asyncio.to_thread(wait_for_connections, survivor, clients_left, 5.0)

        survivor.stop()  # SIGTERM: a clean shutdown says "going away" and deregisters
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    await survivor_ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    members = [replica_pid(m.decode()) for m in client.zrange(keys.replicas, 0, -1)]
    assert survivor.pid not in members
    assert ticker.pid in members  # killed: left behind, ignored once stale


def test_stream_resumes_after_a_redis_restart_without_reconnecting(
    tmp_path: Path, prefix: str
) -> None:
    server = RedisServerProcess(tmp_path / "redis", port=free_port())
    server.start()
    replicas = start_replicas(child_env(server.url, prefix), 2)
    try:
        asyncio.run(_redis_restart_scenario(replicas, server))
    finally:
        for api in replicas:
            api.stop()
        server.stop()


async def _redis_restart_scenario(replicas: list[ApiProcess], server: RedisServerProcess) -> None:
    a, b = replicas
    async with connect(a.ws_url) as ca, connect(b.ws_url) as cb:
        await ca.recv()
        last = max(
            orjson.loads(await ca.recv())["timestamp"], orjson.loads(await cb.recv())["timestamp"]
        )
        await asyncio.to_thread(server.stop)
        # Both replicas see the outage (their REST answers 503) before Redis comes back.
        for api in (a, b):
            await asyncio.to_thread(wait_until, lambda api=api: down(api), 10, "a 503")
        await asyncio.to_thread(server.start)  # the same port, an empty server
        newer = await asyncio.gather(next_after(ca, last, 10.0), next_after(cb, last, 10.0))
        assert all(timestamp > last for timestamp in newer)
        more = await asyncio.gather(
            next_after(ca, max(newer), 3.0), next_after(cb, max(newer), 3.0)
        )
        assert more[0] == more[1] or abs(tick_of(more[0]) - tick_of(more[1])) <= 1


def test_watch_prints_updates_and_reconnects_with_backoff(redis_url: str, prefix: str) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/api/metrics/ws"
    watch = CliProcess(["watch", "--url", url, "--count", "3", "--max-backoff", "0.5"],
                       child_env(redis_url, prefix))  # fmt: skip
    api = ApiProcess(child_env(redis_url, prefix), port=port)
    try:
        watch.start()
        # Nothing listens yet: it must say so, and keep trying.
        wait_until(lambda: "reconnecting in" in watch.stderr_text(), 10, "watch to retry")
        api.start()
        assert watch.process is not None
        assert watch.process.wait(timeout=15) == 0
        lines = watch.stdout_text().splitlines()
        log = watch.stderr_text()
    finally:
        watch.stop()
        api.stop()
    assert f"connecting to {url}" in log
    assert "cannot connect" in log and "reconnecting in" in log
    assert f"connected to {url}" in log
    assert len(lines) == 3
    assert all(" queries " in line and " qps " in line and "% " in line for line in lines)
