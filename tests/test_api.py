"""The HTTP API: shapes, the error body for every error, 503 and recovery, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.clock import ManualClock
from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests.conftest import T0
from workers.redis_process import RedisServerProcess

ENDPOINTS = ["/api/metrics/queries", "/api/metrics/tiers", "/api/metrics/resources",
             "/api/metrics/routing"]  # fmt: skip


@pytest.fixture
def replay_settings(topology_settings: Settings) -> Settings:
    # The API and the collector here run on a clock fixed at T0, years before Redis's: the
    # store must trust the writers' clocks (no skew check), as for a replay.
    return topology_settings.replace(clock_skew_tolerance_s=0)


@pytest.fixture
def client(replay_settings: Settings) -> Iterator[TestClient]:
    """The API on the single redis-server, then through Sentinel, then on the cluster."""
    with TestClient(create_app(replay_settings, ManualClock(T0))) as test_client:
        yield test_client


def assert_error_body(body: object, error: str) -> None:
    assert isinstance(body, dict)
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == error
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)


def test_endpoints_answer_the_guides_shapes(client: TestClient) -> None:
    queries = client.get("/api/metrics/queries").json()
    assert set(queries) == {"timestamps", "queryRate", "totalQueries", "avgLatencyMs",
                            "tierDistribution"}  # fmt: skip
    assert set(client.get("/api/metrics/tiers").json()["tiers"][0]) == {
        "name",
        "tokensPerSec",
        "latencyMs",
        "requestCount",
        "errorRate",
        "p50LatencyMs",
        "p95LatencyMs",
        "p99LatencyMs",
        "requestsPerSec",
        "goodCount",
        "goodputPerSec",
    }  # fmt: skip (goodput: docs/slo.md)
    resources = client.get("/api/metrics/resources").json()
    assert set(resources) == {"vram", "cpu", "memory", "faissIndexSize", "redisCacheSize",
                              "activeConnections", "threadPoolStatus", "diskIO",
                              "networkThroughput", "nodes"}  # fmt: skip
    assert resources["nodes"] == []
    assert resources["threadPoolStatus"] == {"active": 0, "queued": 0}
    routing = client.get("/api/metrics/routing").json()
    assert set(routing) == {"decisionMatrix", "accuracyMetrics", "modelAvailability"}
    assert len(routing["decisionMatrix"]) == 9


def test_recorded_events_show_through_http(client: TestClient, replay_settings: Settings) -> None:
    collector = MetricsCollector(replay_settings, clock=ManualClock(T0))
    collector.record_query("Q3", 250.0, 50, 100.0)
    collector.flush()
    collector.close()
    body = client.get("/api/metrics/queries").json()
    assert body["totalQueries"] == 1
    assert body["tierDistribution"]["Q3"] == 1
    assert body["timestamps"][-1] == "2023-11-14T22:13:40Z"


def test_unknown_path_gets_the_error_body(client: TestClient) -> None:
    response = client.get("/api/metrics/nope")
    assert response.status_code == 404
    assert_error_body(response.json(), "NotFound")


def test_wrong_method_gets_the_error_body(client: TestClient) -> None:
    response = client.post("/api/metrics/queries")
    assert response.status_code == 405
    assert_error_body(response.json(), "MethodNotAllowed")


def test_unknown_node_is_404(client: TestClient) -> None:
    response = client.get("/api/metrics/resources", params={"node": "ghost"})
    assert response.status_code == 404
    assert_error_body(response.json(), "UnknownNode")
    assert response.json()["details"] == {"node": "ghost"}


@pytest.mark.parametrize("node", ["a b", "x" * 65, "", "../etc"])
def test_malformed_node_is_422(client: TestClient, node: str) -> None:
    response = client.get("/api/metrics/resources", params={"node": node})
    assert response.status_code == 422
    assert_error_body(response.json(), "ValidationError")
    assert response.json()["details"]["errors"][0]["loc"] == ["query", "node"]


def test_redis_outage_is_503_then_recovers(tmp_path: Path, prefix: str) -> None:
    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    settings = Settings(redis_url=server.url, key_prefix=prefix)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/api/metrics/queries").status_code == 200
            server.stop()
            # Each request answers (the socket timeouts bound it; the test's timeout catches
            # a hang): 503 with the error body, not a 500 or a stack trace.
            for path in ENDPOINTS:
                response = client.get(path)
                assert response.status_code == 503
                assert_error_body(response.json(), "StoreUnavailable")
                assert "127.0.0.1" not in response.text  # no connection details leak
            server.start()
            for path in ENDPOINTS:
                assert client.get(path).status_code == 200
    finally:
        server.stop()


def test_openapi_documents_every_endpoint_and_field(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    for path in ENDPOINTS:
        operation = schema["paths"][path]["get"]
        assert operation["tags"] == ["metrics"]
        assert {"200", "422", "503"} <= set(operation["responses"])
    query_fields = schema["components"]["schemas"]["QueryMetrics"]["properties"]
    assert all("description" in field for field in query_fields.values())
    assert client.get("/api/docs").status_code == 200


def test_openapi_documents_each_200_body_by_its_model(client: TestClient) -> None:
    # With a bare Response subclass as response_class, FastAPI announced {"type": "string"}.
    schema = client.get("/api/openapi.json").json()
    models = ["QueryMetrics", "TiersResponse", "ResourceMetrics", "RoutingMetrics"]
    for path, model in zip(ENDPOINTS, models, strict=True):
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": f"#/components/schemas/{model}"}


def test_dashboard_is_served_at_the_root(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Relative URLs only, so the page works behind a proxy and loads nothing from outside.
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for asset, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]


def test_dashboard_leaves_api_errors_alone(client: TestClient) -> None:
    assert_error_body(client.get("/api/nope").json(), "NotFound")
    assert_error_body(client.get("/static/nope.js").json(), "NotFound")
    assert "/" not in client.get("/api/openapi.json").json()["paths"]
