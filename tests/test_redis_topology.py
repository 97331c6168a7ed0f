"""Sentinel settings and the one client factory: parsing, what reaches the connections, and
no secret in what is shown."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from fastapi.testclient import TestClient
from pydantic import ValidationError
from rq import Queue

from api.main import create_app
from metrics_store.redis.topology import async_client, describe_redis, sync_client, topology_for
from metrics_store.settings import Settings
from tests.conftest import delete_prefix
from tests.processes import CliProcess, child_env
from tests.sentinel_topology import SentinelTopology
from workers.jobs import enqueue_query, rq_connection
from workers.redis_process import free_port

SECRET = "hunter2-secret"


def test_sentinels_parse_from_the_environment_form() -> None:
    settings = Settings(redis_sentinels=" 10.0.0.5:26379,[::1]:26380 , sentinel-3:1 ")
    assert settings.redis.sentinels == [("10.0.0.5", 26379), ("::1", 26380), ("sentinel-3", 1)]
    assert settings.redis.sentinel_master == "mymaster"
    assert topology_for(settings).name == "sentinel"
    assert topology_for(Settings()).name == "single"


@pytest.mark.parametrize("entry", ["sentinel-1", "h:0", "h:65536", "h :1", ":26379", "h:p"])
def test_a_bad_sentinel_address_is_named(entry: str) -> None:
    with pytest.raises(ValidationError, match="must be host:port") as raised:
        Settings(redis_sentinels=f"ok:1,{entry}")
    assert repr(entry) in str(raised.value)


def test_sentinels_refuse_a_unix_socket_url_and_a_bad_service_name() -> None:
    with pytest.raises(ValidationError, match="unix"):
        Settings(redis_url="unix:///tmp/redis.sock", redis_sentinels="h:1")
    with pytest.raises(ValidationError, match="redis_sentinel_master"):
        Settings(redis_sentinels="h:1", redis_sentinel_master="my master")


def tls_settings() -> Settings:
    return Settings(
        redis_url=f"rediss://app:{SECRET}@ignored.example:6380/3?ssl_cert_reqs=none",
        redis_sentinels="127.0.0.1:26379,127.0.0.1:26380",
        redis_sentinel_master="metrics",
        redis_sentinel_password=f"{SECRET}-sentinel",
    )


def test_the_url_keeps_tls_user_password_and_db_for_the_primary() -> None:
    client = sync_client(tls_settings())
    try:
        pool = client.connection_pool
        assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
        assert pool.service_name == "metrics"
        assert pool.connection_class is redis.sentinel.SentinelManagedSSLConnection
        options = pool.connection_kwargs
        assert (options["username"], options["password"], options["db"]) == ("app", SECRET, 3)
        assert "host" not in options  # the sentinels name the primary, not the URL
        sentinels = pool.sentinel_manager.sentinels
        assert len(sentinels) == 2
        sentinel_options = sentinels[0].connection_pool.connection_kwargs
        assert sentinel_options["password"] == f"{SECRET}-sentinel"
        assert sentinels[0].connection_pool.connection_class is redis.SSLConnection
    finally:
        client.close()


def test_the_async_client_is_built_the_same_way() -> None:
    async def check() -> None:
        client = async_client(tls_settings())
        try:
            pool = client.connection_pool
            assert isinstance(pool, aiosentinel.SentinelConnectionPool)
            assert pool.connection_class is aiosentinel.SentinelManagedSSLConnection
            assert pool.connection_kwargs["password"] == SECRET
        finally:
            await client.aclose()

    asyncio.run(check())


def test_no_secret_in_descriptions_or_errors() -> None:
    settings = Settings(
        redis_url=f"redis://:{SECRET}@ignored:6379/0",
        redis_sentinels=f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
        redis_sentinel_password=SECRET,
        redis_connect_timeout_s=0.2,
    )
    shown = describe_redis(settings)
    assert "sentinels 127.0.0.1:" in shown and "mymaster" in shown
    assert SECRET not in shown and SECRET not in repr(settings)
    client = sync_client(settings)
    try:
        with pytest.raises(redis.ConnectionError) as raised:  # no sentinel answers
            client.ping()
        assert SECRET not in str(raised.value) and SECRET not in repr(raised.value)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("METRICS_REDIS_SENTINELS", "127.0.0.1:26379"), ("METRICS_REDIS_CLUSTER", "true")],
)
def test_up_starts_no_redis_of_its_own_when_sentinels_or_a_cluster_are_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
) -> None:
    from metrics_store.settings import get_settings
    from workers.up import start_redis

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        assert start_redis(tmp_path) == ("redis://localhost:6379/0", None)
        assert not any(tmp_path.iterdir())  # no data directory made either
    finally:
        get_settings.cache_clear()


@pytest.mark.timeout(60)
def test_a_worker_serves_jobs_through_the_sentinels(
    sentinel_topology: SentinelTopology, prefix: str
) -> None:
    settings = Settings(
        redis_url=sentinel_topology.url,
        redis_sentinels=sentinel_topology.sentinels_setting,
        key_prefix=prefix,
    )
    queue_name = f"{prefix}-jobs"
    connection = rq_connection(settings)
    try:
        queue = Queue(queue_name, connection=connection)
        for i in range(3):
            enqueue_query(queue, f"prompt {i}")
        env = child_env(
            sentinel_topology.url,
            prefix,
            METRICS_REDIS_SENTINELS=sentinel_topology.sentinels_setting,
            METRICS_DEMO_TIME_SCALE="0",
        )
        worker = CliProcess(["worker", "--burst", "--queues", queue_name], env)
        worker.start()
        assert worker.process is not None
        assert worker.process.wait(30) == 0, worker.stderr_text()
        worker.stop()
        assert len(queue) == 0
        with TestClient(create_app(settings)) as api:
            assert api.get("/api/metrics/queries").json()["totalQueries"] == 3
        for key in connection.scan_iter(match=f"rq:*{queue_name}*"):
            connection.delete(key)
    finally:
        delete_prefix(sync_client(settings), prefix)
        connection.close()


def test_rq_on_a_cluster_without_a_jobs_redis_stops_at_start_with_one_line() -> None:
    env = {
        **os.environ,
        "METRICS_REDIS_CLUSTER": "true",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: the check comes first
    }
    env.pop("METRICS_JOBS_REDIS_URL", None)
    worker = subprocess.run(
        [sys.executable, "-m", "workers.cli", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 2
    [line] = worker.stderr.strip().splitlines()
    assert line.startswith("metrics-store worker: rq needs METRICS_JOBS_REDIS_URL")
