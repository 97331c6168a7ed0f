"""The live stream's parts in one process: slot, hub, client isolation, tick lock, registry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from api.live.client import GOING_AWAY, serve_client
from api.live.hub import ClientHub
from api.live.slot import Frame, LatestSlot
from api.live.ticker import Ticker
from metrics_store.backoff import Backoff
from metrics_store.clock import ManualClock
from metrics_store.live.live_store import REPLICA_PRUNE_AFTER_S, LiveStore
from metrics_store.live.replicas import ReplicaRegistry, replica_pid
from metrics_store.read.reader import MetricsReader
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from metrics_store.timefmt import iso_utc
from tests.conftest import T0
from workers.watch import format_update


def frame(second: int) -> Frame:
    timestamp = iso_utc(T0 + second)
    return Frame(
        orjson.dumps({"type": "metrics_update", "timestamp": timestamp}).decode(), timestamp
    )


# --- the slot: bounded, latest wins, strictly increasing ------------------------------------
def test_slot_holds_only_the_newest_frame() -> None:
    slot = LatestSlot()
    for second in range(1000):
        assert slot.offer(frame(second))
        assert slot.pending == 1  # never more than one, however far behind the client is
    assert slot.skipped == 999
    assert asyncio.run(slot.take()) == frame(999)
    assert slot.pending == 0


def test_slot_refuses_frames_not_newer_than_the_newest() -> None:
    slot = LatestSlot()
    assert slot.offer(frame(5))
    assert asyncio.run(slot.take()) == frame(5)
    assert not slot.offer(frame(5))  # the same tick again (latest read, then relayed)
    assert not slot.offer(frame(4))  # an older one (a replica with a lagging clock)
    assert slot.pending == 0


async def let_ready_tasks_run() -> None:
    """One pass of the event loop: each task that can run does, up to its next await.

    Not a wait for time: asyncio.sleep(0) is asyncio's own way to yield to the other tasks."""
    await asyncio.sleep(0)


async def run_loop_until(check: Callable[[], bool], what: str, passes: int = 100) -> None:
    """Pass the event loop until `check` holds; fail after `passes` passes (no clock)."""
    for _ in range(passes):
        if check():
            return
        await let_ready_tasks_run()
    raise AssertionError(f"not after {passes} passes of the event loop: {what}")


def test_closed_slot_wakes_its_taker_with_none() -> None:
    async def scenario() -> tuple[Frame | None, int | None]:
        slot = LatestSlot()
        waiting = asyncio.ensure_future(slot.take())
        await let_ready_tasks_run()  # the taker now waits in take()
        assert not waiting.done()
        slot.close(GOING_AWAY)
        assert not slot.offer(frame(1))
        return await waiting, slot.close_code

    assert asyncio.run(scenario()) == (None, GOING_AWAY)


def test_frame_from_payload_refuses_what_is_not_an_update() -> None:
    assert Frame.from_payload(frame(1).text.encode()) == frame(1)
    for bad in (b"not json", b"[1, 2]", b'{"type": "metrics_update"}', b"\xff"):
        with pytest.raises(ValueError):
            Frame.from_payload(bad)


# --- clients: a stuck one never delays the others --------------------------------------------
class FakeSocket:
    """Enough of a starlette WebSocket for serve_client; `stuck` never finishes a send."""

    def __init__(self, stuck: bool = False) -> None:
        self.stuck = stuck
        self.sent: list[str] = []
        self.close_code: int | None = None
        self._never = asyncio.Event()

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict[str, Any]:
        await self._never.wait()  # a client that says nothing
        raise AssertionError

    async def send_text(self, text: str) -> None:
        if self.stuck:
            await self._never.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str | None = None) -> None:
        self.close_code = code


def test_a_stuck_client_does_not_delay_the_others_and_holds_one_frame() -> None:
    async def scenario() -> None:
        hub = ClientHub()
        fast, stuck = FakeSocket(), FakeSocket(stuck=True)

        async def no_latest() -> Frame | None:
            return None

        tasks = [asyncio.ensure_future(serve_client(s, hub, no_latest)) for s in (fast, stuck)]  # type: ignore[arg-type]
        await run_loop_until(lambda: hub.count == 2, "both clients in the hub")
        for second in range(100):
            hub.publish(frame(second))
            await run_loop_until(lambda n=second + 1: len(fast.sent) == n, "the fast client's send")
        assert fast.sent == [frame(s).text for s in range(100)]
        assert stuck.sent == []
        assert all(slot.pending <= 1 for slot in hub._slots)
        hub.close_all(GOING_AWAY)
        await asyncio.wait_for(tasks[0], 1.0)
        assert fast.close_code == GOING_AWAY
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)

    asyncio.run(scenario())


def test_hub_closes_clients_that_join_while_shutting_down() -> None:
    hub = ClientHub()
    hub.close_all(GOING_AWAY)
    assert hub.join().close_code == GOING_AWAY


# --- backoff --------------------------------------------------------------------------------
def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(7))
    for ceiling in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0):
        assert backoff.ceiling_s() == ceiling
        assert 0.0 <= backoff.next_delay() <= ceiling
    backoff.reset()
    assert backoff.ceiling_s() == 0.5
    for _ in range(2000):  # a long outage never overflows
        backoff.next_delay()
    assert backoff.ceiling_s() == 4.0


# --- the tick lock: one computation per second, whatever the number of replicas ------------
def test_exactly_one_replica_computes_each_tick(settings: Settings) -> None:
    keys = Keys(settings.key_prefix)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis.url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(keys.updates_channel)
        clock = ManualClock(T0)
        reader = MetricsReader(client, settings, clock)
        live = LiveStore(client, settings)
        tickers = [Ticker(client, reader, live, clock, f"replica-{i}") for i in range(5)]
        tick = int(T0) + 1
        won = await asyncio.gather(*(t.tick(tick) for t in tickers))
        assert sorted(won) == [False] * 4 + [True]
        assert not any(await asyncio.gather(*(t.tick(tick) for t in tickers)))
        winner = tickers[won.index(True)].replica_id
        assert (await client.get(keys.tick_lock(tick))).decode() == winner
        latest = await client.get(keys.latest_update)
        message = None
        for _ in range(3):  # the first read may only swallow the subscribe confirmation
            message = message or await pubsub.get_message(timeout=1.0)
        assert message is not None and message["data"] == latest
        assert Frame.from_payload(latest).timestamp == iso_utc(tick)
        await pubsub.aclose()
        await client.aclose()

    asyncio.run(scenario())


# --- the replica registry feeds activeConnections ------------------------------------------
def test_registry_counts_live_replicas_and_forgets_removed_ones(settings: Settings) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis.url)
        # Years off Redis's clock: the reader's own clock decides nothing about liveness.
        reader = MetricsReader(client, settings, ManualClock(T0))
        keys = Keys(settings.key_prefix)
        one = ReplicaRegistry(client, settings, "node-a:101:aaaaaa")
        two = ReplicaRegistry(client, settings, "node-a:102:bbbbbb")
        stamp = await one.beat(3)
        await two.beat(2)
        assert await client.zscore(keys.replicas, one.replica_id) == stamp  # Redis's clock
        assert (await reader.resources()).activeConnections == 5
        await two.remove()
        assert (await reader.resources()).activeConnections == 3
        # `one` stopped beating (killed): its last beat is older than the TTL by Redis's clock.
        await client.zadd(keys.replicas, {one.replica_id: stamp - settings.liveness.node_ttl_s - 1})
        assert (await reader.resources()).activeConnections == 0
        await client.zadd(keys.replicas, {one.replica_id: stamp - REPLICA_PRUNE_AFTER_S - 1})
        await two.beat(1)  # any beat prunes the long dead
        assert await client.hkeys(keys.connections) == [b"node-a:102:bbbbbb"]
        assert await client.zrange(keys.replicas, 0, -1) == [b"node-a:102:bbbbbb"]
        await client.aclose()

    asyncio.run(scenario())


def test_replica_pid_reads_the_id() -> None:
    assert replica_pid("node-a:4242:abcdef") == 4242


def test_watch_line_names_the_figures() -> None:
    update = {
        "timestamp": "2025-11-09T10:30:00Z",
        "queries": {"totalQueries": 450, "queryRate": [0.5, 1.25]},
        "resources": {"cpu": {"percent": 45.2}},
        "routing": {"accuracyMetrics": {"totalDecisions": 2250}},
    }
    line = format_update(update)
    assert line.startswith("2025-11-09T10:30:00Z")
    for part in ("queries      450", "qps     1.25", "cpu   45.2%", "decisions     2250"):
        assert part in line
