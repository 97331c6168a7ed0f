"""Every setting of metrics-store, read from the environment once through `get_settings()`."""

from __future__ import annotations

import re
import socket
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Names end up inside Redis key names and sorted-set members ("count:Q2"), so they are kept
# to characters that never need quoting in redis-cli and never contain our separators.
# Checked with fullmatch: in Python's re, "$" also matches before a trailing newline.
MAX_NAME_CHARS = 64
NAME_PATTERN = re.compile(rf"^[A-Za-z0-9._-]{{1,{MAX_NAME_CHARS}}}$")


def _split_names(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _check_names(field: str, names: list[str]) -> list[str]:
    if not names:
        raise ValueError(f"{field} must name at least one entry")
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"{field}: {name!r} must match {NAME_PATTERN.pattern}")
    if len(set(names)) != len(names):
        raise ValueError(f"{field} must not repeat a name")
    return names


# A shorter bearer token could be guessed; `openssl rand -hex 32` makes a good one.
MIN_TOKEN_CHARS = 16
# What a browser sends as Origin: scheme, host (a name, or an IPv6 literal in brackets), port.
ORIGIN_PATTERN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def check_origin(origin: str) -> str:
    """An allow-list entry: "*" or scheme://host[:port] exactly as browsers send Origin."""
    if origin != "*" and not ORIGIN_PATTERN.match(origin):
        raise ValueError(
            f"cors_origins: {origin!r} must be '*' or http(s)://host[:port], with no path"
        )
    return origin.lower()


# One sentinel: a host name or IPv4 address, or an IPv6 literal in brackets, then a port.
SENTINEL_PATTERN = re.compile(
    r"(?:(?P<host>[A-Za-z0-9._-]+)|\[(?P<v6>[0-9A-Fa-f:.]+)\]):(?P<port>[0-9]{1,5})"
)
SentinelAddress = tuple[str, int]


def default_node_name() -> str:
    """The host name, cut down to the characters a node name may hold."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
    return cleaned or "node"


class Settings(BaseSettings):
    """The store's configuration: REDIS_URL by its bare name, the rest as METRICS_<NAME>."""

    # hide_input_in_errors: a validation error would otherwise quote its input, and for a
    # model-level check that input is every setting, the Redis password and token included.
    model_config = SettingsConfigDict(
        env_prefix="METRICS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # --- the fixed contract -------------------------------------------------------------
    # URLs may carry a password: repr=False keeps them out of repr(), str() and tracebacks.
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="Redis holding every metric; redis://, rediss:// (TLS) or unix://.",
        repr=False,
    )
    key_prefix: str = Field(default="metrics", description="Prefix of every key and channel.")
    node: str = Field(default_factory=default_node_name, description="This node's name.")
    tiers: Annotated[list[str], NoDecode] = Field(default=["Q2", "Q3", "Q4"])
    complexities: Annotated[list[str], NoDecode] = Field(default=["SIMPLE", "MODERATE", "COMPLEX"])

    # --- aggregation geometry -------------------------------------------------------------
    bucket_s: int = Field(default=10, ge=1, description="Size of the fine time buckets.")
    rollup_s: int = Field(default=60, ge=1, description="Size of the coarse rollup buckets.")
    window_s: int = Field(default=1800, ge=1, description="Rolling window of the aggregates.")
    chart_points: int = Field(default=18, ge=1, le=1000, description="Points of queryRate.")
    sparkline_points: int = Field(default=20, ge=1, le=1000, description="Points per sparkline.")
    retention_s: int = Field(default=7200, ge=1, description="Lifetime of a bucket after writes.")
    history_s: int = Field(
        default=7 * 86_400,
        ge=1,
        description="Longest window a read may ask for (?window=); coarse rollups (10 and 60 "
        "rollup buckets) are kept this long.",
    )
    stream_maxlen: int = Field(default=100_000, ge=1, description="Approximate cap of a stream.")

    # --- collector -------------------------------------------------------------------------
    buffer_max_events: int = Field(default=100_000, ge=1, description="Events held in memory.")
    buffer_full_policy: Literal["drop_oldest", "block"] = Field(
        default="drop_oldest",
        description="When the buffer is full: drop the oldest event (the caller never waits), "
        "or block the caller up to buffer_block_timeout_s for room (backpressure).",
    )
    buffer_block_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest wait for room under the block policy."
    )
    clock_skew_tolerance_s: float = Field(
        default=300.0,
        ge=0,
        description="Events stamped further than this from Redis's clock are refused and "
        "counted; retention follows Redis's clock. 0 trusts the writers' clocks (backfills, "
        "replays, simulated time): no check, and retention follows the events' clock.",
    )
    batch_max_events: int = Field(default=1000, ge=1, description="Events per write script.")
    flush_interval_s: float = Field(default=0.05, gt=0, description="Idle wait of the flusher.")
    batch_id_ttl_s: int = Field(default=3600, ge=1, description="Memory of written batch ids.")
    # 1 s: a failover or restart costs at most about a second more than Redis takes to come
    # back (docs/performance.md, "High availability"); full jitter keeps the retries spread.
    retry_max_backoff_s: float = Field(default=1.0, gt=0, description="Cap of retry backoff.")

    # --- liveness ----------------------------------------------------------------------------
    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="Beat of live processes.")
    node_ttl_s: float = Field(
        default=5.0, gt=0, description="A node is live this long after a beat."
    )

    # --- sampler (one per node) -------------------------------------------------------------
    sample_interval_s: float = Field(
        default=1.0, gt=0, description="Seconds between two hardware snapshots of this node."
    )
    node_prune_after_s: int = Field(
        default=3600,
        ge=1,
        description="A node silent this long loses its snapshot.",
    )
    faiss_index_path: str | None = Field(
        default=None,
        description="Path or glob of the FAISS index file(s) whose bytes are faissIndexSize; "
        "unset: 0.",
    )
    cache_redis_url: str | None = Field(
        default=None,
        description="Redis whose INFO used_memory is redisCacheSize; unset: REDIS_URL.",
        repr=False,
    )
    job_queues: Annotated[list[str], NoDecode] = Field(
        default=["default"],
        description="rq queues (on the jobs Redis) the workers serve and threadPoolStatus counts.",
    )

    # --- demo traffic ------------------------------------------------------------------------
    demo_time_scale: float = Field(
        default=0.01, ge=0, le=1, description="Real seconds slept per simulated second."
    )

    # --- connections ---------------------------------------------------------------------------
    redis_connect_timeout_s: float = Field(default=1.0, gt=0)
    redis_command_timeout_s: float = Field(default=2.0, gt=0)

    # --- Redis topology (docs/high-availability.md) ---------------------------------------------
    redis_sentinels: Annotated[list[SentinelAddress], NoDecode] = Field(
        default=[],
        description="Sentinels (host:port, comma-separated) to ask for the primary; set, they "
        "win over REDIS_URL's host and port. Empty: a single Redis at REDIS_URL.",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", description="The service name the sentinels monitor."
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="Password the sentinels ask for; unset: none."
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names any node of a Redis Cluster; the client finds the rest "
        "and the data keys spread over `shards` hash tags (docs/scale-out.md).",
    )
    shards: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Hash tags the data keys spread over in cluster mode (16: 3 to 16 "
        "primaries all get writes); single Redis and Sentinel always use one.",
    )
    jobs_redis_url: str | None = Field(
        default=None,
        description="Plain Redis of the rq job queues (rq has no Cluster support); unset: "
        "REDIS_URL.",
        repr=False,
    )
    redis_min_replicas_ack: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Replicas that must acknowledge a batch (WAIT) before it counts as "
        "written; 0: the primary's reply is enough.",
    )
    redis_replicas_ack_timeout_ms: int = Field(
        default=500,
        ge=1,
        description="How long one WAIT waits for the replicas before the batch is retried.",
    )

    # --- the API's exposure (docs/security.md) -------------------------------------------------
    api_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address `metrics-store api`/`up` bind; 0.0.0.0 only in a container or "
        "behind a firewall.",
    )
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port of the API.")
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every /api/metrics request and the WebSocket must carry; "
        "unset: no token asked.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Browser origins (scheme://host[:port], comma-separated) allowed to call "
        "the API and open the WebSocket besides the API's own; empty: same origin only.",
    )

    @property
    def resolved_jobs_redis_url(self) -> str:
        """The rq Redis: METRICS_JOBS_REDIS_URL, else the store's own."""
        return self.jobs_redis_url or self.redis_url

    @property
    def resolved_cache_redis_url(self) -> str:
        """The cache Redis to measure: METRICS_CACHE_REDIS_URL, else the store's own."""
        return self.cache_redis_url or self.redis_url

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_names(value)

    @field_validator("cors_origins")
    @classmethod
    def _validate_origins(cls, value: list[str]) -> list[str]:
        return [check_origin(origin) for origin in value]

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _parse_sentinels(cls, value: object) -> object:
        entries = _split_names(value)
        if isinstance(entries, list):  # "h:p,h:p" from the environment, or a list of "h:p"
            return [parse_sentinel_address(e) if isinstance(e, str) else e for e in entries]
        return entries

    @field_validator("redis_sentinel_master")
    @classmethod
    def _validate_master(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"redis_sentinel_master: {value!r} must match {NAME_PATTERN.pattern}")
        return value

    @field_validator("redis_sentinel_password", mode="before")
    @classmethod
    def _blank_password_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value else value

    @model_validator(mode="after")
    def _check_topology(self) -> Settings:
        if self.redis_sentinels and self.redis_url.startswith("unix:"):
            raise ValueError("redis_sentinels need a redis:// or rediss:// REDIS_URL, not unix://")
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("redis_cluster and redis_sentinels exclude each other: pick one")
        if self.redis_cluster and self.redis_url.startswith("unix:"):
            raise ValueError("redis_cluster needs a redis:// or rediss:// REDIS_URL, not unix://")
        # WAIT must give up before the socket does, or a slow replica looks like a dead primary.
        if self.redis_replicas_ack_timeout_ms / 1000 >= self.redis_command_timeout_s:
            raise ValueError("redis_replicas_ack_timeout_ms must be below redis_command_timeout_s")
        return self

    @field_validator("api_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        # METRICS_API_TOKEN= (set but empty, as compose files write it) means no token.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_token")
    @classmethod
    def _validate_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"api_token must be at least {MIN_TOKEN_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _check_exposure(self) -> Settings:
        # "*" switches the WebSocket Origin check off too, leaving the token as the only guard
        # against any web page a user visits; a deployment with a token names its origins.
        if "*" in self.cors_origins and self.api_token is not None:
            raise ValueError("cors_origins '*' is refused with an api_token: name the origins")
        return self

    @field_validator("tiers", "complexities", "job_queues", mode="before")
    @classmethod
    def _parse_names(cls, value: object) -> object:
        return _split_names(value)

    @field_validator("tiers", "complexities", "job_queues")
    @classmethod
    def _validate_names(cls, value: list[str], info: object) -> list[str]:
        return _check_names(getattr(info, "field_name", "names"), value)

    @field_validator("key_prefix", "node")
    @classmethod
    def _validate_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} must match {NAME_PATTERN.pattern}")
        return value

    @model_validator(mode="after")
    def _check_geometry(self) -> Settings:
        if self.rollup_s % self.bucket_s:
            raise ValueError("rollup_s must be a multiple of bucket_s")
        if self.window_s % self.bucket_s:
            raise ValueError("window_s must be a multiple of bucket_s")
        if self.retention_s < self.window_s + self.rollup_s:
            raise ValueError("retention_s must cover window_s plus one rollup bucket")
        if self.history_s < self.window_s:
            raise ValueError("history_s must cover window_s")
        if self.chart_points * self.bucket_s > self.retention_s:
            raise ValueError("chart_points * bucket_s must fit in retention_s")
        return self

    @model_validator(mode="after")
    def _check_liveness(self) -> Settings:
        # A sampler slower than the node TTL would make its node blink in and out of the view.
        if self.sample_interval_s >= self.node_ttl_s:
            raise ValueError("sample_interval_s must be shorter than node_ttl_s")
        if self.node_prune_after_s <= self.node_ttl_s:
            raise ValueError("node_prune_after_s must be longer than node_ttl_s")
        return self


def parse_sentinel_address(text: str) -> SentinelAddress:
    """ "host:port" (or "[v6]:port") as a (host, port) pair; ValueError naming the entry."""
    # Only the entry itself is quoted: it is an address, never a secret.
    match = SENTINEL_PATTERN.fullmatch(text)
    port = int(match.group("port")) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise ValueError(f"redis_sentinels: {text!r} must be host:port, port 1-65535")
    return match.group("host") or match.group("v6"), port


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
