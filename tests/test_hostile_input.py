"""Hostile clients: unknown parameters, oversized URLs and headers, malformed requests and
WebSocket frames. Each gets a clean error (never a 500) and costs only its own connection.

In process (TestClient, a fixed clock) for what the app decides; against a real API process
(uvicorn, raw sockets, a WebSocket client) for what only a server sees: bytes that are not HTTP,
frames that are not UTF-8 or bigger than the server takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.limits import MAX_HEADER_BYTES, MAX_URL_BYTES
from api.live.client import MAX_CLIENT_MESSAGE_BYTES
from api.main import create_app
from metrics_store.clock import ManualClock
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.processes import ApiProcess, child_env, close_code
from tests.test_api import ENDPOINTS, assert_error_body
from tests.test_live_processes import next_after
from workers.redis_process import RedisServerProcess


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, ManualClock(T0))) as test_client:
        yield test_client


# Query strings of any shape: names and values of any characters, repeated names, empty ones.
QUERY = st.lists(
    st.tuples(st.text(max_size=20).filter(lambda name: name != "node"), st.text(max_size=40)),
    max_size=8,
)


@given(path=st.sampled_from(ENDPOINTS), params=QUERY)
def test_unknown_query_parameters_change_nothing(
    client: TestClient, path: str, params: list[tuple[str, str]]
) -> None:
    plain = client.get(path)
    fuzzed = client.get(path, params=params)
    assert fuzzed.status_code == plain.status_code == 200
    assert fuzzed.json() == plain.json()


def test_a_url_at_the_bound_is_served_and_one_past_it_is_414(client: TestClient) -> None:
    path = "/api/metrics/queries"
    filler = "x=" + "a" * (MAX_URL_BYTES - len(path) - len("?x="))
    assert client.get(f"{path}?{filler}").status_code == 200
    response = client.get(f"{path}?{filler}a")
    assert response.status_code == 414
    assert_error_body(response.json(), "RequestURITooLong")


@pytest.mark.parametrize(
    "headers",
    [
        {"x-big": "a" * MAX_HEADER_BYTES},
        {f"x-h{i}": "v" * 100 for i in range(400)},
    ],
    ids=["one-big-header", "many-headers"],
)
def test_oversized_headers_are_431(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/api/metrics/routing", headers=headers)
    assert response.status_code == 431
    assert_error_body(response.json(), "RequestHeaderFieldsTooLarge")


@pytest.mark.parametrize(
    "query",
    ["node=abc%0A", "node=%FF%FE", "node=%00", "node=" + "a" * 65, "node=", "node=a%20b"],
)
def test_malformed_node_names_are_422(client: TestClient, query: str) -> None:
    response = client.get(f"/api/metrics/resources?{query}")
    assert response.status_code == 422
    assert_error_body(response.json(), "ValidationError")


# --- a real server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(redis_server: RedisServerProcess) -> Iterator[ApiProcess]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    with ApiProcess(child_env(redis_server.url, prefix)) as process:
        yield process
    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter(match=Keys(prefix).scan_pattern):
        client.delete(key)
    client.close()


def raw_exchange(api: ApiProcess, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; the status code and body of the answer (read to EOF)."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get_request(target: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: localhost", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_huge_url_or_header_gets_the_error_body_from_a_real_server(api: ApiProcess) -> None:
    status, body = raw_exchange(api, get_request(b"/api/metrics/queries?x=" + b"a" * 60_000))
    assert status == 414
    assert_error_body(orjson.loads(body), "RequestURITooLong")
    # Past 64 KiB httptools itself refuses the request line: 400, plain text, never the app.
    status, _ = raw_exchange(api, get_request(b"/api/metrics/queries?x=" + b"a" * 2**20))
    assert status == 400
    big = b"X-Big: " + b"a" * (4 * 2**20)
    status, body = raw_exchange(api, get_request(b"/api/metrics/queries", big))
    assert status == 431
    assert_error_body(orjson.loads(body), "RequestHeaderFieldsTooLarge")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/metrics/queries\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/metrics/queries HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /api/metrics/queries HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
    ids=["not-http", "bytes-in-the-target", "header-without-colon", "unknown-version"],
)
def test_requests_that_are_not_http_get_400_not_500(api: ApiProcess, request_bytes: bytes) -> None:
    # uvicorn answers these itself (plain text) before the app sees anything.
    status, _ = raw_exchange(api, request_bytes)
    assert status == 400
    assert api.get("/api/metrics/queries").status_code == 200  # and it serves on


@pytest.mark.parametrize("header_bytes", [MAX_HEADER_BYTES + 1, 2**20])
def test_an_oversized_websocket_handshake_never_opens(api: ApiProcess, header_bytes: int) -> None:
    # Past our bound the app refuses it (403). A header line over 8 KiB is cut off earlier, by
    # uvicorn's default WebSocket protocol, which then leaves the handshake unanswered: the
    # client gives up (open_timeout). Either way that client alone is affected.
    async def scenario() -> None:
        async with connect(api.ws_url) as good:
            last = orjson.loads(await good.recv())["timestamp"]
            with pytest.raises((InvalidStatus, TimeoutError)) as refused:
                big = {"X-Big": "a" * header_bytes}
                async with connect(api.ws_url, additional_headers=big, open_timeout=2):
                    pass
            if isinstance(refused.value, InvalidStatus):
                assert 400 <= refused.value.response.status_code < 500
            await next_after(good, last, 5.0)

    asyncio.run(scenario())


def test_a_handshake_past_the_bound_in_small_headers_is_refused(api: ApiProcess) -> None:
    headers = {f"X-H{i}": "v" * 400 for i in range(100)}  # 40 KB: no line over 8 KiB

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(api.ws_url, additional_headers=headers, open_timeout=5):
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())


# --- WebSocket frames a dashboard never sends ----------------------------------------------------
Send = Callable[[ClientConnection], Awaitable[None]]
BIG = 2**20
# uvicorn's default WebSocket protocol (websockets-sansio in uvicorn 0.54) drops a connection
# whose fragments add up past ws_max_size without a close frame (None): still only that client.
BAD_FRAMES: list[tuple[str, Send, set[int | None]]] = [
    # (what, how the client sends it, the close codes it may get)
    ("invalid-utf8-text", lambda ws: ws.send(b"\xff\xfe{\xc0\xaf}", text=True), {1007}),
    ("one-byte-over", lambda ws: ws.send("x" * (MAX_CLIENT_MESSAGE_BYTES + 1)), {1009}),
    ("huge-text", lambda ws: ws.send("x" * BIG), {1009}),
    ("huge-binary", lambda ws: ws.send(b"\x00" * BIG), {1009}),
    ("small-binary", lambda ws: ws.send(b"\x00\xff"), {1003}),
    ("fragments-adding-up", lambda ws: ws.send(["x" * 1024] * 8), {1009, None}),
]


@pytest.mark.parametrize(
    ("send", "codes"),
    [(send, codes) for _, send, codes in BAD_FRAMES],
    ids=[w for w, _, _ in BAD_FRAMES],
)
def test_a_bad_frame_closes_that_client_alone(
    api: ApiProcess, send: Send, codes: set[int | None]
) -> None:
    async def scenario() -> None:
        async with connect(api.ws_url) as good:
            last = orjson.loads(await good.recv())["timestamp"]
            async with connect(api.ws_url, max_size=None) as bad:
                # The server may hang up while the rest is still being sent: that is fine.
                with contextlib.suppress(ConnectionClosed, OSError):
                    await send(bad)
                assert await close_code(bad) in codes
            await next_after(good, last, 5.0)  # the other client goes on receiving

    asyncio.run(scenario())


def test_a_message_at_the_bound_is_read_and_ignored(api: ApiProcess) -> None:
    async def scenario() -> None:
        async with connect(api.ws_url) as ws:
            last = orjson.loads(await ws.recv())["timestamp"]
            await ws.send("x" * MAX_CLIENT_MESSAGE_BYTES)
            await ws.send("é" * (MAX_CLIENT_MESSAGE_BYTES // 2))  # bytes count, not characters
            await next_after(ws, last, 5.0)

    asyncio.run(scenario())
