"""`Settings`: the groups together, read from the environment once through `get_settings()`."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Self

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import ModelWrapValidatorHandler
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# Names end up inside Redis key names and sorted-set members ("count:Q2"), so they are kept
from metrics_store.settings.checks import (
    NAME_PATTERN,
    check_names,
    default_node_name,
    split_names,
)
from metrics_store.settings.environment import (
    ENV_NAMES,
    FLAT_NAMES,
    GROUPS,
    FlatEnvironment,
    flat_error,
    nest,
)
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


class Settings(BaseSettings):
    """The store's configuration, in groups; REDIS_URL by its bare name, the rest METRICS_<NAME>."""

    # hide_input_in_errors: a validation error would otherwise quote its input, and for a
    # model-level check that input is every setting, the Redis password and token included.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    key_prefix: str = Field(default="metrics", description="Prefix of every key and channel.")
    node: str = Field(default_factory=default_node_name, description="This node's name.")
    tiers: Annotated[list[str], NoDecode] = Field(default=["Q2", "Q3", "Q4"])
    complexities: Annotated[list[str], NoDecode] = Field(default=["SIMPLE", "MODERATE", "COMPLEX"])

    redis: RedisSettings = Field(default_factory=RedisSettings)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    liveness: LivenessSettings = Field(default_factory=LivenessSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    scrape: ScrapeSettings = Field(default_factory=ScrapeSettings)
    slo: SloSettings = Field(default_factory=SloSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments win over the environment, read by flat name rather than by group.
        return init_settings, FlatEnvironment(settings_cls)

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with some settings changed, by flat name: replace(redis_url=u)."""
        unknown = sorted(set(changes) - set(ENV_NAMES))
        if unknown:
            raise TypeError(f"Settings.replace: no setting named {', '.join(unknown)}")
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self).model_validate({**current, **changes})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        # A flat name in `update` would land beside the groups and change nothing they hold.
        stray = sorted(set(update or {}) - set(type(self).model_fields))
        if stray:
            raise TypeError(f"Settings.model_copy cannot set {', '.join(stray)}: use replace()")
        return super().model_copy(update=update, deep=deep)

    @classmethod
    def default_of(cls, name: str) -> Any:
        """A setting's default by its flat name: Settings.default_of("history_s")."""
        group, field = FLAT_NAMES.get(name, ("", name))
        model = GROUPS[group] if group else cls
        return model.model_fields[field].get_default(call_default_factory=True)

    @property
    def resolved_cache_redis_url(self) -> str:
        """The cache Redis to measure: METRICS_CACHE_REDIS_URL, else the store's own."""
        return self.sampler.cache_redis_url or self.redis.url

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        return nest(data) if isinstance(data, Mapping) else data

    @model_validator(mode="wrap")
    @classmethod
    def _name_errors_flat(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        # An error names the setting as it was set (api_port, as METRICS_API_PORT), not by
        # its place in a group (api.port), which no environment variable spells.
        try:
            return handler(data)
        except ValidationError as exc:
            errors = [flat_error(error) for error in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, errors, hide_input=True) from None

    @field_validator("tiers", "complexities", mode="before")
    @classmethod
    def _parse_names(cls, value: object) -> object:
        return split_names(value)

    @field_validator("tiers", "complexities")
    @classmethod
    def _validate_names(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return check_names(info.field_name or "names", value)

    @field_validator("key_prefix", "node")
    @classmethod
    def _validate_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} must match {NAME_PATTERN.pattern}")
        return value

    @model_validator(mode="after")
    def _check_liveness(self) -> Settings:
        # A sampler slower than the node TTL would make its node blink in and out of the view.
        if self.sampler.interval_s >= self.liveness.node_ttl_s:
            raise ValueError("sample_interval_s must be shorter than node_ttl_s")
        # A batch written again after a Sentinel failover counts once only while its id marker
        # lives (no other topology replays: record/replay.py).
        replays = bool(self.redis.sentinels) and self.redis.failover_replay_s > 0
        if replays and self.redis.failover_replay_s >= self.recording.batch_id_ttl_s:
            raise ValueError("redis_failover_replay_s must be shorter than batch_id_ttl_s")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
