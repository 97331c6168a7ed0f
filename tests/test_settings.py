"""Grouped settings: the same flat environment variables and keywords, read into their groups."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from metrics_store.settings import (
    ENV_NAMES,
    FLAT_NAMES,
    GROUPS,
    TOP_LEVEL,
    RedisSettings,
    Settings,
)


def test_every_field_of_every_group_has_exactly_one_flat_name() -> None:
    places = {(group, name) for group, model in GROUPS.items() for name in model.model_fields}
    assert sorted(FLAT_NAMES.values()) == sorted(places)
    assert set(Settings.model_fields) == set(TOP_LEVEL) | set(GROUPS)
    assert len(ENV_NAMES) == len(FLAT_NAMES) + len(TOP_LEVEL) == 56


def test_the_environment_fills_each_group_by_the_flat_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://db:6379/2")
    monkeypatch.setenv("METRICS_REDIS_URL", "redis://ignored:1/0")  # never read, as before
    monkeypatch.setenv("metrics_redis_sentinels", "s1:26379, [::1]:26380")  # any case
    monkeypatch.setenv("METRICS_BATCH_MAX_EVENTS", "250")
    monkeypatch.setenv("METRICS_HISTORY_S", "3600")
    monkeypatch.setenv("METRICS_NODE_TTL_S", "7.5")
    monkeypatch.setenv("METRICS_API_PORT", "8123")
    monkeypatch.setenv("METRICS_SAMPLE_INTERVAL_S", "2")
    monkeypatch.setenv("METRICS_JOB_QUEUES", "high, default")
    monkeypatch.setenv("METRICS_TIERS", "Q1,Q2")
    settings = Settings()
    assert settings.redis.url == "redis://db:6379/2"
    assert settings.redis.sentinels == [("s1", 26379), ("::1", 26380)]
    assert settings.recording.batch_max_events == 250
    assert settings.retention.history_s == 3600
    assert settings.liveness.node_ttl_s == 7.5
    assert settings.api.port == 8123
    assert settings.sampler.interval_s == 2.0
    assert settings.sampler.job_queues == ["high", "default"]
    assert settings.tiers == ["Q1", "Q2"]


def test_keywords_win_over_the_environment_and_take_the_flat_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/0")
    monkeypatch.setenv("METRICS_REDIS_CLUSTER", "true")
    settings = Settings(redis_url="redis://given:6379/0", clock_skew_tolerance_s=0)
    assert settings.redis.url == "redis://given:6379/0"
    assert settings.redis.cluster is True  # the rest of the group still from the environment
    assert settings.recording.clock_skew_tolerance_s == 0
    assert Settings(REDIS_URL="redis://alias:6379/0").redis.url == "redis://alias:6379/0"


def test_a_whole_group_can_be_given_and_a_flat_name_still_wins_inside_it() -> None:
    group = RedisSettings(url="redis://group:6379/0", shards=4)
    settings = Settings(redis=group, redis_url="redis://flat:6379/0")
    assert settings.redis.url == "redis://flat:6379/0"
    assert settings.redis.shards == 4


def test_a_dump_with_flat_overrides_builds_the_same_settings_changed() -> None:
    base = Settings(key_prefix="t1", api_token="a-token-of-16-chars")
    rebuilt = Settings.model_validate({**base.model_dump(), "shards": 2})
    assert rebuilt.redis.shards == 2
    assert rebuilt.api.token == base.api.token and rebuilt.key_prefix == "t1"


def test_replace_changes_by_flat_name_and_validates() -> None:
    settings = Settings(key_prefix="t1")
    copy = settings.replace(node="n2", batch_max_events=7, history_s=3600)
    assert (copy.node, copy.recording.batch_max_events, copy.retention.history_s) == (
        "n2",
        7,
        3600,
    )
    assert copy.redis == settings.redis and copy.key_prefix == "t1"
    with pytest.raises(ValidationError, match="history_s must cover window_s"):
        settings.replace(history_s=60)
    with pytest.raises(TypeError, match="no setting named redis_ulr"):
        settings.replace(redis_ulr="redis://typo:6379/0")


def test_model_copy_with_a_flat_name_is_refused_rather_than_ignored() -> None:
    with pytest.raises(TypeError, match=r"use replace\(\)"):
        flat = {"redis_url": "redis://lost:6379/0"}
        Settings().model_copy(update=flat)  # settings-codemod: keep


def test_errors_name_the_setting_as_it_is_set() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(api_port=0, batch_max_events=0)
    assert {error["loc"] for error in caught.value.errors()} == {
        ("api_port",),
        ("batch_max_events",),
    }
    with pytest.raises(ValidationError, match="sample_interval_s must be shorter than node_ttl_s"):
        Settings(sample_interval_s=9)
    with pytest.raises(ValidationError, match="node_prune_after_s must be longer than node_ttl_s"):
        Settings(node_prune_after_s=5)
    with pytest.raises(ValidationError, match="exclude each other"):
        Settings(redis_cluster=True, redis_sentinels="s1:26379")


def test_defaults_are_found_by_flat_name() -> None:
    assert Settings.default_of("history_s") == 7 * 86_400
    assert Settings.default_of("redis_url") == "redis://localhost:6379/0"
    assert Settings.default_of("tiers") == ["Q2", "Q3", "Q4"]


def test_resolved_urls_fall_back_to_the_store_redis() -> None:
    settings = Settings(redis_url="redis://store:6379/0")
    assert settings.redis.resolved_jobs_url == "redis://store:6379/0"
    assert settings.resolved_cache_redis_url == "redis://store:6379/0"
    jobs = settings.replace(jobs_redis_url="redis://jobs:6379/0")
    assert jobs.redis.resolved_jobs_url == "redis://jobs:6379/0"
