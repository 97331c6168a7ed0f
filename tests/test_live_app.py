"""The WebSocket route in process (TestClient): first update, what closes a client, shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from api.live.client import GOING_AWAY, MAX_CLIENT_MESSAGE_BYTES
from api.main import create_app
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.waiting import wait_for

WS = "/api/metrics/ws"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def next_close(ws: WebSocketTestSession) -> dict[str, Any]:
    """Skip updates until the server's close message."""
    while (message := ws.receive())["type"] != "websocket.close":
        assert message["type"] == "websocket.send"
    return message


def first_update_if_no_tick_between(
    client: TestClient, redis_client: redis.Redis, keys: Keys
) -> tuple[str, str] | None:
    """(the latest published update, the first one a new client got), if no tick came
    between reading the one and receiving the other; else None (try again)."""
    published = redis_client.get(keys.latest_update)
    if published is None:
        return None
    with client.websocket_connect(WS) as ws:
        first = ws.receive_text()
    return (
        (published.decode(), first) if redis_client.get(keys.latest_update) == published else None
    )


def test_first_update_comes_at_once_in_the_rest_shapes(
    client: TestClient, settings: Settings
) -> None:
    # At once: the first update is the latest published, not the next tick's. A tick that
    # falls between reading the latest and receiving the first spoils a try; another follows.
    with redis.Redis.from_url(settings.redis.url) as redis_client:
        keys = Keys(settings.key_prefix)
        published, first = wait_for(
            lambda: first_update_if_no_tick_between(client, redis_client, keys),
            lambda pair: pair is not None,
            15,
            "a connection between two ticks",
        )
    assert first == published
    with client.websocket_connect(WS) as ws:
        update = orjson.loads(ws.receive_text())
        ws.send_text("hello")  # read and ignored
        later = orjson.loads(ws.receive_text())
    assert set(update) == {"type", "timestamp", "queries", "tiers", "resources", "routing",
                           "latency", "slo"}  # fmt: skip
    assert set(update["latency"]) == set(client.get("/api/metrics/latency").json())
    assert set(update["slo"]) == set(client.get("/api/metrics/slo").json())
    assert update["type"] == "metrics_update"
    assert set(update["queries"]) == set(client.get("/api/metrics/queries").json())
    assert len(update["tiers"]) == 3
    assert update["resources"]["activeConnections"] >= 0
    assert len(update["routing"]["decisionMatrix"]) == 9
    assert later["timestamp"] > update["timestamp"]


def test_binary_message_closes_the_client_with_1003(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_bytes(b"\x00\xff garbage")
        assert next_close(ws)["code"] == 1003


def test_oversized_message_closes_the_client_with_1009(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text("x" * (MAX_CLIENT_MESSAGE_BYTES + 1))
        assert next_close(ws)["code"] == 1009


def test_shutdown_closes_clients_with_1001(client: TestClient) -> None:
    app: Any = client.app
    with client.websocket_connect(WS) as ws:
        ws.receive_text()
        assert client.portal is not None
        client.portal.call(app.state.live.close_clients, GOING_AWAY)
        assert next_close(ws)["code"] == GOING_AWAY


def test_an_app_stopped_right_after_starting_shuts_down(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A cancellation landing inside a redis-py call used to be swallowed there, leaving the
    # live loops "cancelling" for ever; shutdown now waits a bounded time and says so.
    for _ in range(5):
        with TestClient(create_app(settings)):
            pass
    assert not [r.message for r in caplog.records if "did not stop" in r.message]
