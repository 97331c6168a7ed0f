"""Redis AUTH, ACL users and TLS end to end, and no Redis password in any output.

Each test starts its own redis-server (tests/secure_redis.py); the store runs on it as it does
in production: a collector writes, an API process answers REST and the WebSocket, and a
sampler process writes its node's snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from websockets.asyncio.client import connect

from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests.processes import ApiProcess, CliProcess, child_env
from tests.secure_redis import (
    PASSWORD,
    acl_server,
    password_server,
    tls_server,
    tls_supported,
)
from tests.tools import skip_or_fail_in_ci
from tests.waiting import wait_until
from workers.redis_process import free_port

SAMPLER_NODE = "sampler-node"
WAIT_S = 20.0  # generous: these wait for conditions, they never measure speed


@pytest.fixture
def store_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def record_queries(url: str, prefix: str, count: int) -> None:
    collector = MetricsCollector(Settings(redis_url=url, key_prefix=prefix, node="worker-1"))
    try:
        for _ in range(count):
            collector.record_query("Q2", 120.0, 40, 100.0)
        collector.flush(timeout_s=WAIT_S)
    finally:
        collector.close()


async def first_update(ws_url: str) -> dict[str, object]:
    async with connect(ws_url, open_timeout=WAIT_S) as websocket:
        update: dict[str, object] = orjson.loads(await asyncio.wait_for(websocket.recv(), WAIT_S))
        return update


Get = Callable[[str], httpx.Response]


def wait_for_node(get: Get, node: str) -> None:
    """Until the API reports the sampler's node: its snapshot reached Redis."""
    path = f"/api/metrics/resources?node={node}"
    wait_until(lambda: get(path).status_code == 200, WAIT_S, f"a snapshot of {node}")


def wait_for_http(get: Get) -> None:
    what = "the API to come up"
    wait_until(lambda: get("/api/openapi.json"), WAIT_S, what, passing=(httpx.TransportError,))


def run_the_store(url: str, prefix: str) -> None:
    """Collector, API (REST and WebSocket) and sampler, all on the Redis at `url`."""
    record_queries(url, prefix, 3)
    env = child_env(url, prefix, METRICS_NODE=SAMPLER_NODE)
    with CliProcess(["sampler"], env) as sampler, ApiProcess(env) as api:
        assert api.get("/api/metrics/queries").json()["totalQueries"] == 3
        update = asyncio.run(first_update(api.ws_url))
        assert update["type"] == "metrics_update"
        assert update["queries"]["totalQueries"] == 3  # type: ignore[index]
        wait_for_node(api.get, SAMPLER_NODE)
        assert PASSWORD not in sampler.stdout_text() + sampler.stderr_text()


def test_store_runs_on_a_password_protected_redis(tmp_path: Path, store_prefix: str) -> None:
    with password_server(tmp_path) as server:
        run_the_store(server.url, store_prefix)
        no_password = f"redis://127.0.0.1:{server.port}/0"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(no_password).ping()


def test_store_runs_as_a_least_privilege_acl_user(tmp_path: Path, store_prefix: str) -> None:
    with acl_server(tmp_path, store_prefix) as server:
        run_the_store(server.url, store_prefix)
        client = redis.Redis.from_url(server.url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("someone-elses-key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
        client.close()


def test_store_runs_over_tls_with_a_verified_certificate(tmp_path: Path, store_prefix: str) -> None:
    if not tls_supported():  # a skip locally; under CI=true a failure, as for a missing tool
        skip_or_fail_in_ci("redis-server is not built with TLS (libssl)")
    with tls_server(tmp_path) as server:
        run_the_store(server.url, store_prefix)
        # Not trusting the throwaway CA, a client refuses the server: verification is on.
        untrusted = server.url.split("?")[0] + "?ssl_cert_reqs=required"
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(untrusted, socket_connect_timeout=2).ping()


# --- no secret anywhere --------------------------------------------------------------------------
def test_the_password_appears_in_no_output(
    tmp_path: Path, store_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`metrics-store up` on a REDIS_URL with a password, then Redis stops: every banner, log
    line and error body, and the OpenAPI docs, are searched for the password."""
    caplog.set_level(logging.DEBUG)
    port = free_port()
    with password_server(tmp_path) as server:
        env = child_env(server.url, store_prefix, METRICS_NODE=SAMPLER_NODE)
        with (
            CliProcess(["up", "--no-demo", "--port", str(port)], env) as up,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as api,
        ):
            wait_for_http(api.get)
            wait_for_node(api.get, SAMPLER_NODE)
            server.stop()  # from here on, every part of the system logs its trouble
            bodies = outage_answers(api, server.url, store_prefix)
            stdout, stderr = up.stdout_text(), up.stderr_text()
            server.start()  # back, so that the rq worker stops at once rather than retrying
    # The search means something only if the outage was reported, and Redis named.
    assert "answering 503" in stderr and "Redis unavailable" in stderr  # API, sampler
    assert "collector-flusher: Redis unavailable" in caplog.text  # the collector
    assert "Redis      redis://:***@127.0.0.1" in stdout  # the banner
    for text in [stdout, stderr, caplog.text, *bodies]:
        assert PASSWORD not in text


def outage_answers(api: httpx.Client, url: str, prefix: str) -> list[str]:
    """What the API answers, docs included, while a collector retries and logs."""
    collector = MetricsCollector(Settings(redis_url=url, key_prefix=prefix))
    collector.record_query("Q2", 1.0, 1, 1.0)
    with pytest.raises(TimeoutError):
        collector.flush(timeout_s=1.5)  # meanwhile the sampler and the replica fail and log
    collector.close(timeout_s=0.1)
    paths = ["/api/metrics/queries", "/api/metrics/resources", "/api/openapi.json", "/api/docs"]
    answers = [api.get(path) for path in paths]
    assert [answer.status_code for answer in answers] == [503, 503, 200, 200]
    return [answer.text for answer in answers]
