"""The registry of the store's Lua scripts: the one way to run one.

Each script is read from the package and hashed once per process (`lua_script`). Calls go by
EVALSHA; when Redis does not know the script (a fresh or restarted Redis, SCRIPT FLUSH) it is
loaded and the call made again, here and nowhere else: for the blocking client, the asyncio
client and the send-then-receive path of `metrics_store.redis.script_sender`. A pipeline loads the
script before it is sent instead, as it cannot redo one call of many.

    ingest = lua_script(INGEST)
    ingest.run(client, keys, args)                  # blocking
    await read.run_async(async_client, keys, args)  # asyncio
    ingest.load(client); ingest.queue(pipe, keys, args)  # pipelined
    await read_on_node.run_on_node(cluster, node, args)  # one node of a cluster, keys in args
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.client import Pipeline
from redis.exceptions import NoScriptError

INGEST = "ingest"
READ = "read"
READ_ON_NODE = "read_on_node"  # read.lua for the shards of one cluster node
WRITE_SNAPSHOT = "write_snapshot"
STAMP_RECORD = "stamp_record"
BEAT_REPLICA = "beat_replica"
SLO_NOTICE = "slo_notice"
FOLD_NOW = "fold_now"
FOLD = "fold"  # a library, not a script: the text before ingest.lua's and fold_now.lua's

# The files whose texts run as one script, in order, where a script is more than its own file
# (a prelude, a library).
_TEXTS_OF = {READ_ON_NODE: (READ_ON_NODE, READ), INGEST: (FOLD, INGEST), FOLD_NOW: (FOLD, FOLD_NOW)}

# Each script sits beside the module that calls it (or, for the generic read, beside its plan).
_PACKAGE_OF = {
    INGEST: "metrics_store.record",
    FOLD: "metrics_store.record",
    FOLD_NOW: "metrics_store.record",
    READ: "metrics_store.redis",
    READ_ON_NODE: "metrics_store.redis",
    WRITE_SNAPSHOT: "metrics_store.live",
    STAMP_RECORD: "metrics_store.live",
    BEAT_REPLICA: "metrics_store.live",
    SLO_NOTICE: "metrics_store.slo",
}

Arg = str | bytes | int | float
T = TypeVar("T")


@cache
def lua_source(name: str) -> str:
    """The text of <name>.lua, in the package of the module that calls it."""
    return resources.files(_PACKAGE_OF[name]).joinpath(f"{name}.lua").read_text("utf-8")


@cache
def lua_script(name: str) -> LuaScript:
    """The script <name>.lua, read and hashed once per process."""
    source = "\n".join(lua_source(text) for text in _TEXTS_OF.get(name, (name,)))
    return LuaScript.from_source(name, source)


@dataclass(frozen=True)
class LuaScript:
    """One Lua script: its source, and the SHA1 that EVALSHA knows it by."""

    name: str
    source: str
    sha: str

    @classmethod
    def from_source(cls, name: str, source: str) -> LuaScript:
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())

    def run(self, client: redis.Redis, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run it on a blocking client."""

        def call() -> Any:
            return client.evalsha(self.sha, len(keys), *keys, *args)

        return self.reloading(client, call, call)

    async def run_async(
        self, client: aioredis.Redis, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> Any:
        """Run it on an asyncio client (the same recovery as `reloading`, awaited)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # a fresh or restarted Redis, or SCRIPT FLUSH
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def run_on_node(
        self, client: AsyncRedisCluster, node: ClusterNode, args: Sequence[Arg]
    ) -> Any:
        """Run it on one node of a cluster, declaring no keys (read_on_node.lua takes its keys
        in `args`); the same recovery as `reloading`, on that node."""
        try:
            return await client.execute_command("EVALSHA", self.sha, 0, *args, target_nodes=node)
        except NoScriptError:
            await client.execute_command("SCRIPT LOAD", self.source, target_nodes=node)
            return await client.execute_command("EVALSHA", self.sha, 0, *args, target_nodes=node)

    def reloading(self, client: redis.Redis, first: Callable[[], T], again: Callable[[], T]) -> T:
        """`first()`; if Redis does not know the script, load it through `client`, then `again()`.

        `again` repeats the call: for a plain call it is `first` itself; a call whose request
        is already on the wire must send it anew.
        """
        try:
            return first()
        except NoScriptError:  # a fresh or restarted Redis, or SCRIPT FLUSH
            client.script_load(self.source)
            return again()

    def load(self, client: redis.Redis) -> None:
        """Make sure Redis knows the script (before pipelining calls of it)."""
        client.script_load(self.source)

    def queue(self, pipe: Pipeline, keys: Sequence[Arg], args: Sequence[Arg]) -> None:
        """Add a call to a pipeline; `load` first: a pipeline cannot load the script half-way
        (its other commands have run by the time a NOSCRIPT reply is read)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def bind(self, client: redis.Redis) -> BoundScript:
        """This script on `client`, called like redis-py's `register_script` result."""
        return BoundScript(self, client)


@dataclass(frozen=True)
class BoundScript:
    """A script bound to one blocking client: `bound(keys=[...], args=[...])`."""

    script: LuaScript
    client: redis.Redis

    def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        return self.script.run(self.client, keys, args)
