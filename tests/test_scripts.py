"""The script registry: every way of running a script survives a Redis that forgot it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.connection import ConnectionPool

from metrics_store.redis.script_sender import ScriptSender, pool_connection
from metrics_store.redis.scripts import INGEST, READ, WRITE_SNAPSHOT, LuaScript, lua_script

ECHO = LuaScript.from_source("echo", "return {KEYS[1], ARGV[1]}")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_every_package_script_is_registered_once() -> None:
    for name in (INGEST, READ, WRITE_SNAPSHOT):
        script = lua_script(name)
        assert script is lua_script(name)
        assert script.source.startswith("--") and len(script.sha) == 40


def test_a_blocking_call_loads_the_script_after_script_flush(client: redis.Redis) -> None:
    assert ECHO.run(client, ["k"], ["a"]) == [b"k", b"a"]
    client.script_flush()
    assert ECHO.bind(client)(keys=["k"], args=["b"]) == [b"k", b"b"]
    assert client.script_exists(ECHO.sha) == [True]


def test_an_asyncio_call_loads_the_script_after_script_flush(
    client: redis.Redis, redis_url: str
) -> None:
    async def run() -> Any:
        async_client = aioredis.Redis.from_url(redis_url)
        try:
            return await ECHO.run_async(async_client, ["k"], ["c"])
        finally:
            await async_client.aclose()

    client.script_flush()
    assert asyncio.run(run()) == [b"k", b"c"]


def test_a_sent_call_is_sent_again_after_noscript(client: redis.Redis) -> None:
    sender = ScriptSender(client, ECHO)
    try:
        client.script_flush()
        sender.send(["k"], ["d"])
        assert sender.receive() == [b"k", b"d"]
        sender.send(["k"], ["e"])  # the same connection, the script known now
        assert sender.receive() == [b"k", b"e"]
    finally:
        sender.discard()


def test_a_pipeline_runs_the_script_once_loaded(client: redis.Redis) -> None:
    client.script_flush()
    ECHO.load(client)
    pipe = client.pipeline(transaction=False)
    ECHO.queue(pipe, ["k"], ["f"])
    ECHO.queue(pipe, ["k"], ["g"])
    assert pipe.execute() == [[b"k", b"f"], [b"k", b"g"]]


class PoolBefore53(ConnectionPool):
    """A pool with redis-py < 5.3's signature: the command name is required."""

    def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Any:
        return ("connection for", command_name)


def test_a_pool_that_requires_a_command_name_gets_one() -> None:
    assert pool_connection(PoolBefore53()) == ("connection for", "EVALSHA")
