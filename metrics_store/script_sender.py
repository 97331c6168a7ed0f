"""Send a script call, do other work while Redis runs it, then read its reply.

The flusher encodes the next batch while Redis executes the current one: redis-py's blocking
client would wait for each reply before returning, leaving Redis idle while Python encodes and
Python idle while Redis executes. One call is in flight at a time, on one connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError

Arg = str | bytes | int | float


class ScriptSender:
    """One connection of `client`'s pool, used for send-then-receive script calls."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._connection: AbstractConnection | None = None
        self._sent: tuple[Sequence[Arg], Sequence[Arg]] | None = None

    def send(self, keys: Sequence[Arg], args: Sequence[Arg]) -> None:
        """Put the call on the wire without waiting for its reply."""
        connection = self._connected()
        try:
            connection.send_command("EVALSHA", self._sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except BaseException:
            self.discard()
            raise
        self._sent = (keys, args)

    def receive(self) -> Any:
        """The reply of the call sent last; loads the script if Redis does not know it."""
        assert self._connection is not None and self._sent is not None, "nothing was sent"
        try:
            try:
                return self._connection.read_response()
            except NoScriptError:
                self._client.script_load(self._source)  # Redis restarted or SCRIPT FLUSH
                keys, args = self._sent
                self._connection.send_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", self._sha, len(keys), *keys, *args
                )
                return self._connection.read_response()
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

    def _connected(self) -> AbstractConnection:
        if self._connection is None:
            self._connection = self._client.connection_pool.get_connection()
        return self._connection
