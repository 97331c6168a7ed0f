"""Alerts by webhook, with real API processes and a real HTTP receiver: one POST per change of
an objective's state across two replicas, in Alertmanager's format, the resolve when it is
back to ok, and a failing receiver retried with backoff and counted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import psutil
import pytest
import redis.asyncio as aioredis

from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from metrics_store.slo.outbox import Outbox
from tests.processes import ApiProcess, child_env
from tests.waiting import wait_until

# 90 %: a budget of 10 % bad. Half the queries failing burns it 5x: past the ticket pairs'
# factors (3 and 1), short of the pages' (6 and 14.4).
OBJECTIVES = {"objectives": [{"name": "availability", "kind": "errors", "target": 0.9}]}


class Receiver:
    """An HTTP endpoint that records each POST and answers the statuses it is given, then
    200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.posts: list[tuple[int, dict[str, Any]]] = []
        # hold_first: the first POST is held unanswered until `release` is set (status 0)
        self.hold_first = False
        self.held_from: int | None = None  # the held sender's port
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.hold_first and receiver.held_from is None:
                    receiver.posts.append((0, orjson.loads(body)))
                    receiver.held_from = self.client_address[1]
                    receiver.release.wait(60)
                    return  # never answered: its sender is gone by then
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.posts.append((status, orjson.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def taken(self) -> list[dict[str, Any]]:
        return [body for status, body in self.posts if status == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver([])
    found.thread.start()
    yield found
    found.release.set()
    found.server.shutdown()
    found.server.server_close()


def record(settings: Settings, ok: int, failed: int) -> None:
    collector = MetricsCollector(settings)
    try:
        for i in range(ok + failed):
            collector.record_query("Q2", 10.0, 1, 1.0, is_error=i < failed)
        collector.flush(timeout_s=20)
    finally:
        collector.close()


def health(api: ApiProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{api.base_url}/api/metrics/health", timeout=5).json()
    return body


@pytest.mark.timeout(120)
def test_each_change_is_posted_once_across_two_replicas(
    settings: Settings, receiver: Receiver
) -> None:
    env = child_env(settings.redis.url, settings.key_prefix, METRICS_SLO_WEBHOOK_URL=receiver.url)
    with ApiProcess(env) as first, ApiProcess(env) as second:
        put = httpx.put(f"{first.base_url}/api/metrics/slo/definitions", json=OBJECTIVES)
        assert put.is_success, put.text
        record(settings, ok=5, failed=5)
        wait_until(lambda: len(receiver.posts) >= 1, 30, "the firing notice")
        record(settings, ok=100, failed=0)  # 5 bad of 110: under the budget again
        wait_until(lambda: len(receiver.posts) >= 2, 30, "the resolve")
        wait_until(lambda: health(second)["sloWebhookSent"] == 2, 10, "both counted as sent")
    assert len(receiver.posts) == 2  # each change once, though two replicas tick
    firing, resolved = receiver.taken()
    assert firing["version"] == "4" and firing["status"] == "firing"
    assert firing["groupLabels"] == {"alertname": "SLOBurn", "slo": "availability"}
    (alert,) = firing["alerts"]
    assert alert["labels"] == {
        "alertname": "SLOBurn",
        "slo": "availability",
        "tier": "*",
        "severity": "ticket",
    }
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert resolved["status"] == "resolved"
    (ended,) = resolved["alerts"]
    assert ended["status"] == "resolved" and ended["labels"] == alert["labels"]
    assert ended["fingerprint"] == alert["fingerprint"]
    assert ended["startsAt"] == alert["startsAt"] < ended["endsAt"]


@pytest.mark.timeout(120)
def test_a_failing_receiver_is_retried_with_backoff_and_counted(
    settings: Settings, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    env = child_env(settings.redis.url, settings.key_prefix, METRICS_SLO_WEBHOOK_URL=receiver.url)
    with ApiProcess(env) as api:
        assert httpx.put(f"{api.base_url}/api/metrics/slo/definitions", json=OBJECTIVES).is_success
        record(settings, ok=5, failed=5)
        wait_until(lambda: len(receiver.taken()) == 1, 40, "the notice, after two failures")
        found = health(api)
    assert [status for status, _ in receiver.posts] == [500, 503, 200]
    assert receiver.posts[0][1] == receiver.posts[2][1]  # the same notice, sent again
    assert (found["sloWebhookSent"], found["sloWebhookFailures"]) == (1, 2)


def sender_of(port: int, replicas: list[ApiProcess]) -> ApiProcess:
    """The replica whose connection comes from `port` (the one sending the held POST)."""
    for replica in replicas:
        for connection in psutil.Process(replica.pid).net_connections(kind="tcp"):
            if connection.laddr and connection.laddr.port == port:
                return replica
    raise AssertionError(f"no replica holds a connection from port {port}")


@pytest.mark.timeout(120)
def test_a_replica_killed_while_sending_leaves_the_change_to_the_other(
    settings: Settings, receiver: Receiver
) -> None:
    receiver.hold_first = True
    env = child_env(
        settings.redis.url,
        settings.key_prefix,
        METRICS_SLO_WEBHOOK_URL=receiver.url,
        METRICS_SLO_WEBHOOK_TIMEOUT_S="3",  # the lease: 4 x 3 + 2 = 14 s
    )
    replicas = [ApiProcess(env), ApiProcess(env)]
    for replica in replicas:
        replica.start()
    try:
        put = httpx.put(f"{replicas[0].base_url}/api/metrics/slo/definitions", json=OBJECTIVES)
        assert put.is_success
        record(settings, ok=5, failed=5)
        wait_until(lambda: receiver.held_from is not None, 30, "the notice's first POST")
        assert receiver.held_from is not None
        sender = sender_of(receiver.held_from, replicas)
        sender.kill()  # mid-POST: the notice is sent, not yet recorded as taken
        receiver.release.set()
        survivor = replicas[1 - replicas.index(sender)]
        wait_until(lambda: len(receiver.taken()) == 1, 40, "the survivor's POST, past the lease")
        wait_until(lambda: health(survivor)["sloWebhookSent"] == 1, 10, "counted as sent")
    finally:
        for replica in replicas:
            replica.stop()
    (held, _), (taken, body) = receiver.posts
    assert (held, taken) == (0, 200)
    assert body == receiver.posts[0][1]  # the same notice, once taken


@pytest.mark.timeout(120)
def test_removing_a_firing_objective_resolves_it(settings: Settings, receiver: Receiver) -> None:
    env = child_env(settings.redis.url, settings.key_prefix, METRICS_SLO_WEBHOOK_URL=receiver.url)
    with ApiProcess(env) as api:
        url = f"{api.base_url}/api/metrics/slo/definitions"
        assert httpx.put(url, json=OBJECTIVES).is_success
        record(settings, ok=5, failed=5)
        wait_until(lambda: len(receiver.taken()) == 1, 30, "the firing notice")
        assert httpx.put(url, json={"objectives": []}).is_success
        wait_until(lambda: len(receiver.taken()) == 2, 30, "the resolve of the removed one")
    firing, resolved = receiver.taken()
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["labels"] == firing["alerts"][0]["labels"]
    assert resolved["alerts"][0]["fingerprint"] == firing["alerts"][0]["fingerprint"]


def test_a_change_is_noticed_once_however_the_ticks_overlap(settings: Settings) -> None:
    async def race() -> tuple[list[bool], list[bool], int]:
        clients = [aioredis.Redis.from_url(settings.redis.url) for _ in range(2)]
        try:
            outboxes = [Outbox(client, Keys(settings.key_prefix)) for client in clients]
            # Two replicas' ticks both saw "ok" stored and both want it to be "page".
            both = [
                await outbox.change("slo-a", "Q2", "", "page", 100.0, b'{"n": 1}')
                for outbox in outboxes
            ]
            # A slower tick from before the change, and a stale one deciding back: refused.
            late = [
                await outboxes[1].change("slo-a", "Q2", "page", "ok", 99.0, b'{"n": 2}'),
                await outboxes[0].change("slo-a", "Q2", "ok", "ticket", 101.0, b'{"n": 3}'),
            ]
            notices = await clients[0].xlen(Keys(settings.key_prefix).slo_notices)
            return both, late, int(notices)
        finally:
            for client in clients:
                await client.aclose()

    assert asyncio.run(race()) == ([True, False], [False, False], 1)


def test_the_webhook_lease_is_fenced(settings: Settings) -> None:
    async def stalled_sender() -> tuple[bool, bool, bytes | None]:
        client = aioredis.Redis.from_url(settings.redis.url)
        keys = Keys(settings.key_prefix)
        try:
            outbox = Outbox(client, keys)
            assert await outbox.take_lease("replica-a", ttl_ms=50)
            await client.delete(keys.slo_webhook_lease)  # as if a's lease ran out, stalled
            assert await outbox.take_lease("replica-b", ttl_ms=60_000)
            recorded = await outbox.sent("replica-a", "1-1")  # a's late record: refused
            await outbox.release_lease("replica-a")  # and b's lease is not a's to drop
            holder = await client.get(keys.slo_webhook_lease)
            return recorded, await outbox.sent("replica-b", "1-1"), holder
        finally:
            await client.aclose()

    assert asyncio.run(stalled_sender()) == (False, True, b"replica-b")
