"""The one place Redis clients are built: single, Sentinel or Cluster, from settings, failing fast.

Every process (collector, sampler, API, job worker, `up`) gets its clients here, so the topology
is decided once: `METRICS_REDIS_CLUSTER=true` means REDIS_URL names a node of a Redis Cluster
(the client finds the others), `METRICS_REDIS_SENTINELS` set means ask those sentinels for the
primary, otherwise `REDIS_URL` is the Redis. In every mode REDIS_URL's scheme (rediss: TLS),
user and password apply to the data connections (and its database, outside Cluster).

A cluster client is handed out typed as `redis.Redis` (`aioredis.Redis`): redis-py's
RedisCluster offers every command the store sends under the same names and signatures, so
callers stay one type; the few paths that differ (script pipelining, WAIT, sharded pub/sub)
ask `is_cluster()`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.retry import Retry

from metrics_store.settings import Settings

# No hidden retries: the collector retries with its own backoff, and an API request should
# answer 503 within the timeouts rather than wait through redis-py's retries.
HEALTH_CHECK_INTERVAL_S = 30

Topology = Literal["single", "sentinel", "cluster"]


def topology(settings: Settings) -> Topology:
    """Which kind of Redis the settings describe."""
    if settings.redis_cluster:
        return "cluster"
    return "sentinel" if settings.redis_sentinels else "single"


def redis_now(client: redis.Redis) -> float:
    """Redis's clock (TIME), the one clock every writer shares."""
    seconds, micros = client.time()
    return float(seconds + micros / 1_000_000)


def is_cluster(client: redis.Redis | aioredis.Redis) -> bool:
    """Whether `client` is a Redis Cluster client (handed out as a plain client's type)."""
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def sync_client(
    settings: Settings, url: str | None = None, *, command_timeout_s: float | None = None
) -> redis.Redis:
    """A blocking client for threads (the collector's flusher, the sampler, rq).

    `url` names another Redis (a cache to measure, the rq queues): always a single server.
    """
    options = _client_options(settings, command_timeout_s)
    if url is None and topology(settings) == "cluster":
        cluster = RedisCluster.from_url(settings.redis_url, **options)
        return cast(redis.Redis, cluster)  # see the module docstring
    if url is None and topology(settings) == "sentinel":
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            settings.redis_sentinels,
            sentinel_kwargs=_sentinel_options(settings),
            **_master_options(settings.redis_url),
        )
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.redis_sentinel_master, redis_class=_SentinelMaster, **options
        )
        return master
    return redis.Redis.from_url(url or settings.redis_url, **options)


def async_client(settings: Settings) -> aioredis.Redis:
    """An asyncio client with its own connection pool (the API)."""
    options = _client_options(settings, None)
    if topology(settings) == "cluster":
        cluster = AsyncRedisCluster.from_url(settings.redis_url, **options)
        return cast(aioredis.Redis, cluster)  # see the module docstring
    if topology(settings) == "sentinel":
        sentinel = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
            settings.redis_sentinels,
            sentinel_kwargs=_sentinel_options(settings),
            **_master_options(settings.redis_url),
        )
        async_master: aioredis.Redis = sentinel.master_for(
            settings.redis_sentinel_master, redis_class=_AsyncSentinelMaster, **options
        )
        return async_master
    return aioredis.Redis.from_url(settings.redis_url, **options)


def multi(client: redis.Redis) -> Pipeline:
    """A MULTI pipeline for keys of one slot; on a cluster, a plain one (see `multi_async`)."""
    return client.pipeline(transaction=not is_cluster(client))


def multi_async(client: aioredis.Redis) -> AsyncPipeline:
    """A MULTI pipeline for keys of one slot; on a cluster, a plain one.

    On a cluster the commands still go to one node, in order, on one connection, but other
    clients' commands may run between them: redis-py has no cluster transactions before 6,
    and its asyncio ones run each command on a thread of its own, blocking the event loop.
    Callers keep to writes whose interleaving a reader can bear for a moment.
    """
    return client.pipeline(transaction=not is_cluster(client))


def node_client(client: redis.Redis, key: str) -> redis.Redis:
    """The client of the one server holding `key`: a cluster's primary for its slot, or `client`.

    For commands that must share the connection of a write (WAIT counts the replicas that
    hold what this connection wrote).
    """
    if not isinstance(client, RedisCluster):
        return client
    primary = client.get_redis_connection(client.get_node_from_key(key, replica=False))
    return cast(redis.Redis, primary)


class StaleSlotMap(redis.ConnectionError):
    """A cluster node no longer serves a slot the client thought it did (a failover, slots
    moved): read the slot map anew and try again. A ConnectionError: while it lasts, an
    outage (retried, or 503), never a refusal or a bug."""


# Replies of a cluster node whose slots moved or are moving.
SLOT_MOVES: tuple[type[Exception], ...] = (MovedError, AskError, ClusterDownError, TryAgainError)


def refresh_slots(client: redis.Redis) -> None:
    """After a failure on a node reached by `node_client`: read the cluster's slot map anew."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(redis.RedisError, OSError):  # the next attempt tries again
            client.nodes_manager.initialize()


def jobs_client(settings: Settings, *, command_timeout_s: float | None = None) -> redis.Redis:
    """The rq queues' Redis: METRICS_JOBS_REDIS_URL, a plain Redis (rq knows no Cluster).

    Unset, the store's own Redis (through Sentinel where configured; a Cluster's REDIS_URL
    node as a plain server, which serves rq only if that node holds its keys' slots).
    """
    if settings.jobs_redis_url is None and topology(settings) != "cluster":
        return sync_client(settings, command_timeout_s=command_timeout_s)
    url = settings.resolved_jobs_redis_url
    return redis.Redis.from_url(url, **_client_options(settings, command_timeout_s))


def describe_redis(settings: Settings) -> str:
    """Where the store's Redis is, for logs and banners: never a password."""
    if topology(settings) == "cluster":
        return f"cluster via {redacted_url(settings.redis_url)}"
    if topology(settings) == "sentinel":
        where = ",".join(_address(host, port) for host, port in settings.redis_sentinels)
        return f"sentinels {where} (service {settings.redis_sentinel_master})"
    return redacted_url(settings.redis_url)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _client_options(settings: Settings, command_timeout_s: float | None) -> dict[str, Any]:
    return {
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": command_timeout_s or settings.redis_command_timeout_s,
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
    password = settings.redis_sentinel_password
    tls = {k: v for k, v in _master_options(settings.redis_url).items() if k.startswith("ssl")}
    return {
        **tls,
        "password": password.get_secret_value() if password is not None else None,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_command_timeout_s,
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


async def discover_cluster(client: aioredis.Redis) -> None:
    """Read a cluster's slot map if the client has not yet (a plain client needs nothing).

    redis-py's asyncio RedisCluster reads it on its first command; several first commands
    sent together fail ("Connection closed by server"), and a sharded subscription finds its
    node from the map without sending a command first (SlotNotCoveredError).
    """
    if isinstance(client, AsyncRedisCluster):
        await client.initialize()  # a no-op once initialised


async def drop_idle_connections(client: aioredis.Redis) -> None:
    """Close the pool's idle connections, after a failure that may mean Redis restarted.

    Every idle connection of a restarted Redis is dead, and with no retries each one would
    fail one command of its own before the pool replaced it: one lost tick or heartbeat per
    pooled connection. Connections in use are left alone; their requests fail by themselves.
    """
    if is_cluster(client):
        return  # the cluster client dropped the failed node's connections and re-read the slots
    # Closing a dead socket may complain; it is closed all the same.
    with contextlib.suppress(redis.RedisError, OSError):
        await client.connection_pool.disconnect(inuse_connections=False)
