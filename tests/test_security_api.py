"""The API's guards in process: bearer token, WebSocket Origin check, CORS allow-list."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from api.main import create_app
from api.security import origin_allowed
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.test_api import ENDPOINTS, assert_error_body
from workers.redis_process import RedisServerProcess

TOKEN = "t0ken-for-the-tests-0123456789"
WS = "/api/metrics/ws"
OWN = "http://testserver"  # TestClient's Host header is "testserver"
DASHBOARD = "https://dash.example.com"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def base_settings(redis_server: RedisServerProcess) -> Iterator[Settings]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield Settings(redis_url=redis_server.url, key_prefix=prefix, node="node-a")
    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter(match=Keys(prefix).scan_pattern):
        client.delete(key)
    client.close()


@contextmanager
def started(settings: Settings, headers: dict[str, str]) -> Iterator[TestClient]:
    """The app, started and streaming: its first update has arrived.

    One app per module, kept running: an app stopped right after it started can hang its
    shutdown (the live stream's tasks, not this module's subject).
    """
    with TestClient(create_app(settings)) as client:
        with client.websocket_connect(WS, headers=headers) as ws:
            ws.receive_json()
        yield client


@pytest.fixture(scope="module")
def guarded(base_settings: Settings) -> Iterator[TestClient]:
    """The API with a token and one allowed dashboard origin."""
    update: dict[str, Any] = {"api_token": TOKEN, "cors_origins": [DASHBOARD]}
    settings = Settings.model_validate({**base_settings.model_dump(), **update})
    with started(settings, bearer()) as client:
        yield client


@pytest.fixture(scope="module")
def open_api(base_settings: Settings) -> Iterator[TestClient]:
    """The API with the defaults: no token, no CORS."""
    with started(base_settings, {}) as client:
        yield client


# --- the bearer token on REST ------------------------------------------------------------------
WRONG_HEADERS = [{}, bearer("wrong-token-0123456789"), {"Authorization": TOKEN}]


@pytest.mark.parametrize("headers", WRONG_HEADERS)
def test_rest_without_the_token_is_401_with_the_error_body(
    guarded: TestClient, headers: dict[str, str]
) -> None:
    for path in ENDPOINTS:
        response = guarded.get(path, headers=headers)
        assert response.status_code == 401
        assert_error_body(response.json(), "Unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text


def test_rest_with_the_token_answers(guarded: TestClient) -> None:
    for path in ENDPOINTS:
        assert guarded.get(path, headers=bearer()).status_code == 200


def test_the_page_and_the_docs_stay_public(guarded: TestClient) -> None:
    for path in ["/", "/static/app.js", "/api/docs", "/api/openapi.json"]:
        assert guarded.get(path).status_code == 200, path


def test_openapi_documents_the_bearer_scheme_only_when_a_token_is_set(
    guarded: TestClient, open_api: TestClient
) -> None:
    schema = guarded.get("/api/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    for path in ENDPOINTS:
        assert schema["paths"][path]["get"]["security"] == [{"bearerToken": []}]
    assert "securitySchemes" not in open_api.get("/api/openapi.json").json().get("components", {})


def test_no_token_is_asked_by_default(open_api: TestClient) -> None:
    assert open_api.get(ENDPOINTS[0]).status_code == 200
    with open_api.websocket_connect(WS) as ws:
        assert ws.receive_json()["type"] == "metrics_update"


# --- the WebSocket: token and Origin -----------------------------------------------------------
def refused(client: TestClient, url: str, headers: dict[str, str]) -> WebSocketDenialResponse:
    with pytest.raises(WebSocketDenialResponse) as caught:
        client.websocket_connect(url, headers=headers).__enter__()
    return caught.value


@pytest.mark.parametrize("query", ["", "?token=wrong-token-0123456789"])
def test_websocket_without_the_token_is_refused_with_401(guarded: TestClient, query: str) -> None:
    denial = refused(guarded, WS + query, {})
    assert denial.status_code == 401
    assert_error_body(denial.json(), "Unauthorized")


@pytest.mark.parametrize(
    ("url", "headers"),
    [(WS, bearer()), (f"{WS}?token={TOKEN}", {}), (f"{WS}?token={TOKEN}", {"Origin": OWN})],
)
def test_websocket_takes_the_token_as_header_or_query(
    guarded: TestClient, url: str, headers: dict[str, str]
) -> None:
    with guarded.websocket_connect(url, headers=headers):
        pass  # accepted: entering returns once the server has accepted the handshake


@pytest.mark.parametrize("origin", [OWN, DASHBOARD, "HTTP://TESTSERVER:80"])
def test_websocket_admits_its_own_origin_and_the_allowed_ones(
    guarded: TestClient, origin: str
) -> None:
    with guarded.websocket_connect(WS, headers={"Origin": origin, **bearer()}):
        pass  # accepted


@pytest.mark.parametrize("origin", ["https://evil.example", "http://testserver:8080", "null"])
def test_websocket_refuses_a_foreign_origin_with_403(guarded: TestClient, origin: str) -> None:
    denial = refused(guarded, WS, {"Origin": origin, **bearer()})
    assert denial.status_code == 403
    assert_error_body(denial.json(), "Forbidden")


def test_websocket_origin_check_holds_without_a_token(open_api: TestClient) -> None:
    assert refused(open_api, WS, {"Origin": "https://evil.example"}).status_code == 403


def test_without_the_denial_extension_the_handshake_closes_with_1008(
    open_api: TestClient,
) -> None:
    # Servers without the ASGI "websocket.http.response" extension turn 1008 into a bare 403.
    app: Any = open_api.app  # started by open_api; the wrapper runs no second lifespan

    async def no_extensions(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "extensions": {}}, receive, send)

    with pytest.raises(WebSocketDisconnect) as caught:
        TestClient(no_extensions).websocket_connect(
            WS, headers={"Origin": "https://evil.example"}
        ).__enter__()
    assert caught.value.code == 1008


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "h:1", True),
        ("https://example.com", "example.com", True),
        ("https://example.com", "example.com:443", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("https://example.com", "example.com:80", False),
        ("http://example.com.evil", "example.com", False),
        ("http://h:99999", "h:99999", False),
    ],
)
def test_same_origin_compares_host_and_port(origin: str | None, host: str, allowed: bool) -> None:
    assert origin_allowed(origin, host, []) is allowed


# --- CORS ---------------------------------------------------------------------------------------
def test_cors_headers_only_for_allowed_origins(guarded: TestClient) -> None:
    allowed = guarded.get(ENDPOINTS[0], headers={"Origin": DASHBOARD, **bearer()})
    assert allowed.headers["access-control-allow-origin"] == DASHBOARD
    foreign = guarded.get(ENDPOINTS[0], headers={"Origin": "https://evil.example", **bearer()})
    assert "access-control-allow-origin" not in foreign.headers


def test_cors_preflight_allows_the_authorization_header(guarded: TestClient) -> None:
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    ok = guarded.options(ENDPOINTS[0], headers={"Origin": DASHBOARD, **preflight})
    assert ok.status_code == 200
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    bad = guarded.options(ENDPOINTS[0], headers={"Origin": "https://evil.example", **preflight})
    assert bad.status_code == 400
    assert_error_body(bad.json(), "BadRequest")


def test_no_cors_headers_by_default(open_api: TestClient) -> None:
    response = open_api.get(ENDPOINTS[0], headers={"Origin": DASHBOARD})
    assert not [name for name in response.headers if name.startswith("access-control-")]
