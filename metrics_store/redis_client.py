"""Redis clients built from settings, with bounded timeouts so an outage fails fast."""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from metrics_store.settings import Settings

# No hidden retries: the collector retries with its own backoff, and an API request should
# answer 503 within the timeouts rather than wait through redis-py's retries.
HEALTH_CHECK_INTERVAL_S = 30


def sync_client(settings: Settings, url: str | None = None) -> redis.Redis:
    """A blocking client for threads (the collector's flusher, the sampler); `url` overrides."""
    return redis.Redis.from_url(
        url or settings.redis_url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_command_timeout_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def async_client(settings: Settings) -> aioredis.Redis:
    """An asyncio client with its own connection pool (the API)."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_command_timeout_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


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


async def drop_idle_connections(client: aioredis.Redis) -> None:
    """Close the pool's idle connections, after a failure that may mean Redis restarted.

    Every idle connection of a restarted Redis is dead, and with no retries each one would
    fail one command of its own before the pool replaced it: one lost tick or heartbeat per
    pooled connection. Connections in use are left alone; their requests fail by themselves.
    """
    # Closing a dead socket may complain; it is closed all the same.
    with contextlib.suppress(redis.RedisError, OSError):
        await client.connection_pool.disconnect(inuse_connections=False)
