"""Every setting of metrics-store, read from the environment once through `get_settings()`.

The settings come in groups, one per concern that reads them; the environment variables and
the constructor keep their flat names (FLAT_NAMES says which group each one lands in):

    settings.redis.url                     REDIS_URL
    settings.recording.batch_max_events    METRICS_BATCH_MAX_EVENTS
    settings.retention.history_s           METRICS_HISTORY_S
    settings.liveness.node_ttl_s           METRICS_NODE_TTL_S
    settings.api.token                     METRICS_API_TOKEN
    settings.sampler.interval_s            METRICS_SAMPLE_INTERVAL_S

    settings = Settings(redis_url="redis://db:6379/0", key_prefix="t1", history_s=3600)
    replay = settings.replace(clock_skew_tolerance_s=0)  # a validated copy
"""

from metrics_store.settings.checks import (
    MAX_NAME_CHARS,
    MIN_TOKEN_CHARS,
    NAME_PATTERN,
    SentinelAddress,
    check_origin,
    default_node_name,
    parse_sentinel_address,
)
from metrics_store.settings.environment import ENV_NAMES, FLAT_NAMES, GROUPS, TOP_LEVEL, nest
from metrics_store.settings.groups import (
    ApiSettings,
    LivenessSettings,
    RecordingSettings,
    RedisSettings,
    RetentionSettings,
    SamplerSettings,
)
from metrics_store.settings.model import Settings, get_settings

__all__ = [
    "ENV_NAMES",
    "FLAT_NAMES",
    "GROUPS",
    "MAX_NAME_CHARS",
    "MIN_TOKEN_CHARS",
    "NAME_PATTERN",
    "TOP_LEVEL",
    "ApiSettings",
    "LivenessSettings",
    "RecordingSettings",
    "RedisSettings",
    "RetentionSettings",
    "SamplerSettings",
    "SentinelAddress",
    "Settings",
    "check_origin",
    "default_node_name",
    "get_settings",
    "nest",
    "parse_sentinel_address",
]
