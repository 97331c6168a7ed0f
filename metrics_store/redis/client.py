"""Redis clients, built from settings: the builders each topology uses, and their helpers.

Which builder a process uses is decided in one place, `metrics_store.redis.topology`; this
module only knows how to build a single, Sentinel or Cluster client, and how to reach Redis's
clock. In every mode REDIS_URL's scheme (rediss: TLS), user and password apply to the data
connections (and its database, outside Cluster).

A cluster client is handed out typed as `redis.Redis` (`aioredis.Redis`): redis-py's
RedisCluster offers every command the store sends under the same names and signatures, so
callers stay one type; the few operations that differ are the topology's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry

from metrics_store.settings import Settings

# No hidden retries: the collector retries with its own backoff, and an API request should
# answer 503 within the timeouts rather than wait through redis-py's retries.
HEALTH_CHECK_INTERVAL_S = 30


# How much memory a Redis's data takes: one server's, or a Cluster's over its primaries.
UsedMemory = Callable[[redis.Redis], int]


def server_used_memory(client: redis.Redis) -> int:
    """`used_memory` from INFO memory of one server."""
    return int(client.info("memory")["used_memory"])


def redis_now(client: redis.Redis) -> float:
    """Redis's clock (TIME), the one clock every writer shares."""
    seconds, micros = client.time()
    return float(seconds + micros / 1_000_000)


class StaleSlotMap(redis.ConnectionError):
    """A cluster node no longer serves a slot the client thought it did (a failover, slots
    moved): read the slot map anew and try again. A ConnectionError: while it lasts, an
    outage (retried, or 503), never a refusal or a bug."""


# Replies of a cluster node whose slots moved or are moving, and the cluster client's own
# failures to find a node (no node reachable, a slot without a primary): not RedisErrors.
SLOT_MOVES: tuple[type[Exception], ...] = (
    MovedError,
    AskError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)


def single_client(
    settings: Settings, url: str | None = None, *, command_timeout_s: float | None = None
) -> redis.Redis:
    """A blocking client of one server: REDIS_URL, or `url` (a cache to measure, rq's queues)."""
    return redis.Redis.from_url(
        url or settings.redis.url, **_client_options(settings, command_timeout_s)
    )


def single_async_client(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis.url, **_client_options(settings, None))


def sentinel_client(settings: Settings, *, command_timeout_s: float | None = None) -> redis.Redis:
    """A blocking client of the primary that the sentinels name, found anew after a failover."""
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        settings.redis.sentinels,
        sentinel_kwargs=_sentinel_options(settings),
        **_master_options(settings.redis.url),
    )
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis.sentinel_master,
        redis_class=_SentinelMaster,
        **_client_options(settings, command_timeout_s),
    )
    return master


def sentinel_async_client(settings: Settings) -> aioredis.Redis:
    sentinel = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
        settings.redis.sentinels,
        sentinel_kwargs=_sentinel_options(settings),
        **_master_options(settings.redis.url),
    )
    master: aioredis.Redis = sentinel.master_for(
        settings.redis.sentinel_master,
        redis_class=_AsyncSentinelMaster,
        **_client_options(settings, None),
    )
    return master


def cluster_client(settings: Settings, *, command_timeout_s: float | None = None) -> redis.Redis:
    """A blocking Redis Cluster client; REDIS_URL names any node, the client finds the rest."""
    cluster = RedisCluster.from_url(
        settings.redis.url, **_client_options(settings, command_timeout_s)
    )
    return cast(redis.Redis, cluster)  # see the module docstring


def cluster_async_client(settings: Settings) -> aioredis.Redis:
    cluster = AsyncRedisCluster.from_url(settings.redis.url, **_client_options(settings, None))
    return cast(aioredis.Redis, cluster)  # see the module docstring


def describe_sentinels(settings: Settings) -> str:
    where = ",".join(_address(host, port) for host, port in settings.redis.sentinels)
    return f"sentinels {where} (service {settings.redis.sentinel_master})"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _client_options(settings: Settings, command_timeout_s: float | None) -> dict[str, Any]:
    return {
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": settings.redis.connect_timeout_s,
        "socket_timeout": command_timeout_s or settings.redis.command_timeout_s,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }


def _master_options(url: str) -> dict[str, Any]:
    """REDIS_URL's user, password, database and TLS options, without its host and port."""
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    options.pop("host", None)
    options.pop("port", None)
    # rediss:// parses to SSLConnection; the Sentinel pool picks its TLS connection class
    # from `ssl` instead, and would otherwise connect to the URL's host, not the primary.
    if options.pop("connection_class", None) is not None:
        options["ssl"] = True
    return options


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """How to reach the sentinels: the same timeouts and TLS as the data, their own password."""
    password = settings.redis.sentinel_password
    tls = {k: v for k, v in _master_options(settings.redis.url).items() if k.startswith("ssl")}
    return {
        **tls,
        "password": password.get_secret_value() if password is not None else None,
        "socket_connect_timeout": settings.redis.connect_timeout_s,
        "socket_timeout": settings.redis.command_timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }


class _SentinelMaster(redis.Redis):
    """The primary's client; closing it also closes its connections to the sentinels."""

    def close(self) -> None:
        super().close()
        pool = self.connection_pool
        if isinstance(pool, redis.sentinel.SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                sentinel.close()


class _AsyncSentinelMaster(aioredis.Redis):
    """The primary's asyncio client; closing it also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, aiosentinel.SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


def redacted_url(url: str) -> str:
    """The URL with any password (user info, or a `...password=` query argument) as ***."""
    parts = urlsplit(url)
    # redis-py passes unknown query arguments through, e.g. ssl_password for a client key.
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_args = any("password" in key.lower() for key, _ in query)
    if parts.password is None and not secret_args:
        return url
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        port = f":{parts.port}" if parts.port is not None else ""
        parts = parts._replace(netloc=f"{user}:***@{host}{port}")
    if secret_args:
        redacted = [(k, "***" if "password" in k.lower() else v) for k, v in query]
        parts = parts._replace(query=urlencode(redacted, safe="/*"))
    # Joined by hand: urlunsplit would turn unix:///path (an empty host) into unix:/path.
    query_part = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}{query_part}"
