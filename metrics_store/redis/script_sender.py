"""Send a script call, do other work while Redis runs it, then read its reply.

The flusher encodes the next batch while Redis executes the current one: redis-py's blocking
client would wait for each reply before returning, leaving Redis idle while Python encodes and
Python idle while Redis executes. One call is in flight at a time, on one connection.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection, ConnectionPool

from metrics_store.redis.scripts import Arg, LuaScript


class ScriptSender:
    """One connection of `client`'s pool, used for send-then-receive calls of `script`."""

    def __init__(self, client: redis.Redis, script: LuaScript) -> None:
        self._client = client
        self._script = script
        self._connection: AbstractConnection | None = None
        self._sent: tuple[Sequence[Arg], Sequence[Arg]] | None = None

    def send(self, keys: Sequence[Arg], args: Sequence[Arg]) -> None:
        """Put the call on the wire without waiting for its reply."""
        connection = self._connected()
        try:
            self._send_on(connection, keys, args)
        except BaseException:
            self.discard()
            raise
        self._sent = (keys, args)

    def receive(self) -> Any:
        """The reply of the call sent last (the registry loads the script if Redis lacks it)."""
        assert self._connection is not None and self._sent is not None, "nothing was sent"
        connection, (keys, args) = self._connection, self._sent

        def send_again() -> Any:
            self._send_on(connection, keys, args)
            return connection.read_response()

        try:
            return self._script.reloading(self._client, connection.read_response, send_again)
        except (redis.ConnectionError, redis.TimeoutError):
            self.discard()
            raise
        finally:
            self._sent = None

    def discard(self) -> None:
        """Drop the connection (after a failure its protocol state is unknown)."""
        if self._connection is not None:
            self._connection.disconnect()  # type: ignore[no-untyped-call]
            self._client.connection_pool.release(self._connection)  # type: ignore[arg-type]
            self._connection = None

    def _send_on(
        self, connection: AbstractConnection, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> None:
        sha = self._script.sha
        connection.send_command("EVALSHA", sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]

    def _connected(self) -> AbstractConnection:
        if self._connection is None:
            self._connection = pool_connection(self._client.connection_pool)
        return self._connection


def pool_connection(pool: ConnectionPool) -> AbstractConnection:
    """A connection taken from `pool`, on every redis-py version the package admits.

    Before redis-py 5.3 `get_connection` requires a command name (and ignores it); from 5.3
    on it is optional and passing one is deprecated. Asking the signature, rather than
    comparing version strings, also covers pool subclasses and pre-releases.
    """
    if _requires_command_name(type(pool)):
        return pool.get_connection("EVALSHA")
    return pool.get_connection()


def _requires_command_name(pool_class: type[ConnectionPool]) -> bool:
    parameter = inspect.signature(pool_class.get_connection).parameters.get("command_name")
    return parameter is not None and parameter.default is inspect.Parameter.empty
