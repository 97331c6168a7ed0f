"""The flat names of the settings (the environment variables, and the constructor's keywords),
and where each lands among the groups: one table for both."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails
from pydantic_settings import (
    PydanticBaseSettingsSource,
)

# Names end up inside Redis key names and sorted-set members ("count:Q2"), so they are kept
from metrics_store.settings.groups import (
    ApiSettings,
    LivenessSettings,
    OtlpSettings,
    RecordingSettings,
    RedisSettings,
    RetentionSettings,
    SamplerSettings,
    ScrapeSettings,
    SloSettings,
)

GROUPS: dict[str, type[BaseModel]] = {
    "redis": RedisSettings,
    "recording": RecordingSettings,
    "retention": RetentionSettings,
    "liveness": LivenessSettings,
    "api": ApiSettings,
    "sampler": SamplerSettings,
    "otlp": OtlpSettings,
    "scrape": ScrapeSettings,
    "slo": SloSettings,
}

# The flat name of every grouped setting (its environment variable is METRICS_<NAME>, but
# REDIS_URL), and the group and field it lands in. The constructor, replace() and the
# environment all speak these names; the code reads the groups.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    "redis_url": ("redis", "url"),
    "redis_connect_timeout_s": ("redis", "connect_timeout_s"),
    "redis_command_timeout_s": ("redis", "command_timeout_s"),
    "redis_sentinels": ("redis", "sentinels"),
    "redis_sentinel_master": ("redis", "sentinel_master"),
    "redis_sentinel_password": ("redis", "sentinel_password"),
    "redis_cluster": ("redis", "cluster"),
    "shards": ("redis", "shards"),
    "jobs_redis_url": ("redis", "jobs_url"),
    "redis_min_replicas_ack": ("redis", "min_replicas_ack"),
    "redis_replicas_ack_timeout_ms": ("redis", "replicas_ack_timeout_ms"),
    "redis_failover_replay_s": ("redis", "failover_replay_s"),
    "buffer_max_events": ("recording", "buffer_max_events"),
    "buffer_full_policy": ("recording", "buffer_full_policy"),
    "buffer_block_timeout_s": ("recording", "buffer_block_timeout_s"),
    "clock_skew_tolerance_s": ("recording", "clock_skew_tolerance_s"),
    "batch_max_events": ("recording", "batch_max_events"),
    "flush_interval_s": ("recording", "flush_interval_s"),
    "batch_id_ttl_s": ("recording", "batch_id_ttl_s"),
    "retry_max_backoff_s": ("recording", "retry_max_backoff_s"),
    "stream_maxlen": ("recording", "stream_maxlen"),
    "bucket_s": ("retention", "bucket_s"),
    "rollup_s": ("retention", "rollup_s"),
    "window_s": ("retention", "window_s"),
    "chart_points": ("retention", "chart_points"),
    "sparkline_points": ("retention", "sparkline_points"),
    "retention_s": ("retention", "retention_s"),
    "history_s": ("retention", "history_s"),
    "heartbeat_interval_s": ("liveness", "heartbeat_interval_s"),
    "node_ttl_s": ("liveness", "node_ttl_s"),
    "node_prune_after_s": ("liveness", "node_prune_after_s"),
    "api_host": ("api", "host"),
    "api_port": ("api", "port"),
    "api_token": ("api", "token"),
    "cors_origins": ("api", "cors_origins"),
    "sample_interval_s": ("sampler", "interval_s"),
    "faiss_index_path": ("sampler", "faiss_index_path"),
    "cache_redis_url": ("sampler", "cache_redis_url"),
    "job_queues": ("sampler", "job_queues"),
    "demo_time_scale": ("sampler", "demo_time_scale"),
    "otlp_port": ("otlp", "port"),
    "otlp_tier_attribute": ("otlp", "tier_attribute"),
    "otlp_tier_map": ("otlp", "tier_map"),
    "otlp_max_body_bytes": ("otlp", "max_body_bytes"),
    "scrape_interval_s": ("scrape", "interval_s"),
    "scrape_timeout_s": ("scrape", "timeout_s"),
    "scrape_tier": ("scrape", "tier"),
    "scrape_tier_label": ("scrape", "tier_label"),
    "slo_file": ("slo", "file"),
    "slo_history_s": ("slo", "history_s"),
    "slo_webhook_url": ("slo", "webhook_url"),
    "slo_webhook_timeout_s": ("slo", "webhook_timeout_s"),
}
# The settings every room shares stay at the top, under their own names.
TOP_LEVEL = ("key_prefix", "node", "tiers", "complexities")
# The store's Redis keeps the bare name every Redis tool knows.
ENV_NAMES: dict[str, str] = {
    name: "REDIS_URL" if name == "redis_url" else f"METRICS_{name.upper()}"
    for name in (*TOP_LEVEL, *FLAT_NAMES)
}


def nest(data: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names moved into their groups: {"redis_url": u} -> {"redis": {"url": u}}.

    A flat name wins over the same field given inside its group, as the more specific.
    """
    nested: dict[str, Any] = {}
    moved: dict[str, dict[str, Any]] = {}
    for name, value in data.items():
        name = "redis_url" if name == "REDIS_URL" else name
        if name in FLAT_NAMES:
            group, field = FLAT_NAMES[name]
            moved.setdefault(group, {})[field] = value
        else:
            nested[name] = value
    for group, fields in moved.items():
        nested[group] = {**_fields_of(nested.get(group)), **fields}
    return nested


_FLAT_NAME_OF = {place: name for name, place in FLAT_NAMES.items()}


def flat_error(error: ErrorDetails) -> InitErrorDetails:
    """One validation error located by flat name: ("api", "port") -> ("api_port",)."""
    loc = error["loc"]
    flat = _FLAT_NAME_OF.get((str(loc[0]), str(loc[1]))) if len(loc) > 1 else None
    details = InitErrorDetails(
        type=error["type"],
        loc=loc if flat is None else (flat, *loc[2:]),
        input=error["input"],
    )
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


def _fields_of(group: object) -> dict[str, Any]:
    if isinstance(group, BaseModel):  # shallow: the values stay as validated
        return {name: getattr(group, name) for name in type(group).model_fields}
    return dict(group) if isinstance(group, Mapping) else {}


class FlatEnvironment(PydanticBaseSettingsSource):
    """REDIS_URL and METRICS_<NAME> (any case), each put in its group, values as raw text."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads every variable at once

    def __call__(self) -> dict[str, Any]:
        environ = {name.lower(): value for name, value in os.environ.items()}
        found = {
            name: environ[env.lower()] for name, env in ENV_NAMES.items() if env.lower() in environ
        }
        return nest(found)
