"""The settings in groups, one per concern that reads them; each group checks its own values."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    NoDecode,
)

# Names end up inside Redis key names and sorted-set members ("count:Q2"), so they are kept
from metrics_store.settings.checks import (
    MIN_TOKEN_CHARS,
    NAME_PATTERN,
    SentinelAddress,
    check_names,
    check_origin,
    parse_sentinel_address,
    split_names,
)

_GROUP_CONFIG = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class RedisSettings(BaseModel):
    """Where the store's Redis is and how to reach it: single, Sentinel or Cluster."""

    model_config = _GROUP_CONFIG

    # URLs may carry a password: repr=False keeps them out of repr(), str() and tracebacks.
    url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis holding every metric; redis://, rediss:// (TLS) or unix://.",
        repr=False,
    )
    connect_timeout_s: float = Field(default=1.0, gt=0)
    command_timeout_s: float = Field(default=2.0, gt=0)
    sentinels: Annotated[list[SentinelAddress], NoDecode] = Field(
        default=[],
        description="Sentinels (host:port, comma-separated) to ask for the primary; set, they "
        "win over REDIS_URL's host and port. Empty: a single Redis at REDIS_URL.",
    )
    sentinel_master: str = Field(
        default="mymaster", description="The service name the sentinels monitor."
    )
    sentinel_password: SecretStr | None = Field(
        default=None, description="Password the sentinels ask for; unset: none."
    )
    cluster: bool = Field(
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
    jobs_url: str | None = Field(
        default=None,
        description="Plain Redis of the rq job queues (rq has no Cluster support); unset: "
        "REDIS_URL.",
        repr=False,
    )
    min_replicas_ack: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Replicas that must acknowledge a batch (WAIT) before it counts as "
        "written; 0: the primary's reply is enough.",
    )
    replicas_ack_timeout_ms: int = Field(
        default=500,
        ge=1,
        description="How long one WAIT waits for the replicas before the batch is retried.",
    )
    failover_replay_s: float = Field(
        default=60.0,
        ge=0,
        description="Sentinel: a collector keeps each batch this long after Redis took it, and "
        "writes it again if the primary moves meanwhile (an acknowledgement the old primary "
        "gave may not survive the failover); 0: never.",
    )

    @property
    def resolved_jobs_url(self) -> str:
        """The rq Redis: METRICS_JOBS_REDIS_URL, else the store's own."""
        return self.jobs_url or self.url

    @field_validator("sentinels", mode="before")
    @classmethod
    def _parse_sentinels(cls, value: object) -> object:
        entries = split_names(value)
        if isinstance(entries, list):  # "h:p,h:p" from the environment, or a list of "h:p"
            return [parse_sentinel_address(e) if isinstance(e, str) else e for e in entries]
        return entries

    @field_validator("sentinel_master")
    @classmethod
    def _validate_master(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"redis_sentinel_master: {value!r} must match {NAME_PATTERN.pattern}")
        return value

    @field_validator("sentinel_password", mode="before")
    @classmethod
    def _blank_password_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value else value

    @model_validator(mode="after")
    def _check_topology(self) -> Self:
        if self.sentinels and self.url.startswith("unix:"):
            raise ValueError("redis_sentinels need a redis:// or rediss:// REDIS_URL, not unix://")
        if self.cluster and self.sentinels:
            raise ValueError("redis_cluster and redis_sentinels exclude each other: pick one")
        if self.cluster and self.url.startswith("unix:"):
            raise ValueError("redis_cluster needs a redis:// or rediss:// REDIS_URL, not unix://")
        # WAIT must give up before the socket does, or a slow replica looks like a dead primary.
        if self.replicas_ack_timeout_ms / 1000 >= self.command_timeout_s:
            raise ValueError("redis_replicas_ack_timeout_ms must be below redis_command_timeout_s")
        return self


class RecordingSettings(BaseModel):
    """How a collector holds events and writes them: buffer, batches, retries, clock checks."""

    model_config = _GROUP_CONFIG

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
    stream_maxlen: int = Field(default=100_000, ge=1, description="Approximate cap of a stream.")


class RetentionSettings(BaseModel):
    """The time geometry: bucket sizes, the rolling window, how long buckets and rollups live."""

    model_config = _GROUP_CONFIG

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

    @model_validator(mode="after")
    def _check_geometry(self) -> Self:
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


class LivenessSettings(BaseModel):
    """How live processes and nodes prove they are alive, and when a silent one is forgotten."""

    model_config = _GROUP_CONFIG

    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="Beat of live processes.")
    node_ttl_s: float = Field(
        default=5.0, gt=0, description="A node is live this long after a beat."
    )
    node_prune_after_s: int = Field(
        default=3600, ge=1, description="A node silent this long loses its snapshot."
    )

    @model_validator(mode="after")
    def _check_pruning(self) -> Self:
        if self.node_prune_after_s <= self.node_ttl_s:
            raise ValueError("node_prune_after_s must be longer than node_ttl_s")
        return self


class ApiSettings(BaseModel):
    """The API's exposure (docs/security.md): where it listens, whom it lets in."""

    model_config = _GROUP_CONFIG

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address `metrics-store api`/`up` bind; 0.0.0.0 only in a container or "
        "behind a firewall.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port of the API.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token every /api/metrics request and the WebSocket must carry; "
        "unset: no token asked.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Browser origins (scheme://host[:port], comma-separated) allowed to call "
        "the API and open the WebSocket besides the API's own; empty: same origin only.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return split_names(value)

    @field_validator("cors_origins")
    @classmethod
    def _validate_origins(cls, value: list[str]) -> list[str]:
        return [check_origin(origin) for origin in value]

    @field_validator("token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        # METRICS_API_TOKEN= (set but empty, as compose files write it) means no token.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("token")
    @classmethod
    def _validate_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"api_token must be at least {MIN_TOKEN_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _check_exposure(self) -> Self:
        # "*" switches the WebSocket Origin check off too, leaving the token as the only guard
        # against any web page a user visits; a deployment with a token names its origins.
        if "*" in self.cors_origins and self.token is not None:
            raise ValueError("cors_origins '*' is refused with an api_token: name the origins")
        return self


class SamplerSettings(BaseModel):
    """The node's sampler and the workers beside it: what it measures, how often."""

    model_config = _GROUP_CONFIG

    interval_s: float = Field(
        default=1.0, gt=0, description="Seconds between two hardware snapshots of this node."
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
    demo_time_scale: float = Field(
        default=0.01, ge=0, le=1, description="Real seconds slept per simulated second."
    )

    @field_validator("job_queues", mode="before")
    @classmethod
    def _parse_queues(cls, value: object) -> object:
        return split_names(value)

    @field_validator("job_queues")
    @classmethod
    def _validate_queues(cls, value: list[str]) -> list[str]:
        return check_names("job_queues", value)


class OtlpSettings(BaseModel):
    """The OTLP/HTTP receiver: where it listens alone, how a series finds its tier."""

    model_config = _GROUP_CONFIG

    port: int = Field(default=4318, ge=1, le=65535, description="Port of `metrics-store otlp`.")
    tier_attribute: str = Field(
        default="gen_ai.request.model",
        min_length=1,
        description="The data point (or resource) attribute whose value names a series' tier.",
    )
    tier_map: Annotated[dict[str, str], NoDecode] = Field(
        default={},
        description="Attribute value -> tier, as 'llama-8b=Q2,llama-70b=Q3'; a value that is "
        "itself a tier's name needs no entry.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest export body taken, after gzip is undone (else 413).",
    )

    @field_validator("tier_map", mode="before")
    @classmethod
    def _parse_tier_map(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            source, equals, tier = entry.partition("=")
            if not equals or not source.strip() or not tier.strip():
                raise ValueError(f"otlp_tier_map entry {entry!r} is not value=tier")
            pairs[source.strip()] = tier.strip()
        return pairs


class ScrapeSettings(BaseModel):
    """The engine scraper (`metrics-store scrape`): how often, how long it waits, the tier."""

    model_config = _GROUP_CONFIG

    interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between two scrapes of each engine (`--interval`)."
    )
    timeout_s: float = Field(
        default=3.0, gt=0, description="Seconds a scrape waits for an engine's answer."
    )
    tier: str | None = Field(
        default=None,
        pattern=NAME_PATTERN.pattern,
        description="The tier of every scraped series (`--tier`); unset: each series' tier "
        "label, through the OTLP tier map.",
    )
    tier_label: str = Field(
        default="model_name",
        min_length=1,
        description="The label whose value names a scraped series' tier where no tier is set "
        "(vLLM and SGLang label their metrics with model_name).",
    )


class SloSettings(BaseModel):
    """Service-level objectives (docs/slo.md): their file, the history they need, their alerts."""

    model_config = _GROUP_CONFIG

    file: str | None = Field(
        default=None,
        description="A TOML or YAML file of objectives, stored in Redis when an API replica "
        "starts; unset: those stored (PUT /api/metrics/slo/definitions).",
    )
    history_s: int = Field(
        default=31 * 86_400,
        ge=0,
        description="How long the hour roll-ups are kept: the longest compliance window an "
        "objective may have (30 days, and an hour of edge); below METRICS_HISTORY_S, that.",
    )
    webhook_url: str | None = Field(
        default=None,
        description="Where each change of an objective's state is POSTed, in Alertmanager's "
        "webhook format (version 4), once across all replicas; unset: nowhere.",
        repr=False,  # it may carry a token
    )
    webhook_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="How long one webhook POST may take."
    )
