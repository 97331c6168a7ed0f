"""Security settings refuse unsafe values, and never show a secret when printed or refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from metrics_store.redis.client import redacted_url
from metrics_store.settings import Settings
from workers.cli import main

SECRET = "s3cret-pa55word"
TOKEN = "t0ken-for-the-tests-0123456789"


def test_defaults_bind_loopback_with_no_token_and_no_cors() -> None:
    settings = Settings()
    assert settings.api.host == "127.0.0.1"
    assert settings.api.token is None
    assert settings.api.cors_origins == []


def test_environment_sets_token_and_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_API_TOKEN", TOKEN)
    monkeypatch.setenv("METRICS_CORS_ORIGINS", "https://Dash.example.com, http://10.0.0.5:3000")
    settings = Settings()
    assert settings.api.token is not None and settings.api.token.get_secret_value() == TOKEN
    assert settings.api.cors_origins == ["https://dash.example.com", "http://10.0.0.5:3000"]


def test_an_empty_token_variable_means_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_API_TOKEN", "")
    assert Settings().api.token is None


@pytest.mark.parametrize(
    ("update", "complaint"),
    [
        ({"api_token": "short"}, "at least 16"),
        ({"api_token": TOKEN, "cors_origins": "*"}, "'*' is refused"),
        ({"cors_origins": "https://dash.example.com/path"}, "no path"),
        ({"cors_origins": "dash.example.com"}, "http(s)://"),
        ({"api_port": 0}, "api_port"),
    ],
)
def test_unsafe_values_are_refused(update: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        Settings(**update)


def test_cors_wildcard_is_allowed_without_a_token() -> None:
    assert Settings(cors_origins="*").api.cors_origins == ["*"]


def test_repr_and_str_hide_the_redis_urls_and_the_token() -> None:
    settings = Settings(
        redis_url=f"redis://app:{SECRET}@db:6379/0",
        cache_redis_url=f"redis://:{SECRET}@cache:6379/0",
        api_token=TOKEN,
    )
    for text in (repr(settings), str(settings)):
        assert SECRET not in text and TOKEN not in text


def test_validation_errors_do_not_quote_the_input() -> None:
    # A model-level check fails: its error would otherwise quote every setting given.
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=f"redis://:{SECRET}@db/0", api_token=TOKEN, retention_s=1)
    assert SECRET not in str(caught.value) and TOKEN not in str(caught.value)


def test_cli_reports_bad_configuration_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@db/0")
    monkeypatch.setenv("METRICS_API_TOKEN", "short-" + SECRET[:5])
    monkeypatch.setattr("metrics_store.settings.get_settings", Settings)  # no cached settings
    assert main(["api"]) == 2
    out = capsys.readouterr()
    assert "at least 16" in out.err
    assert SECRET[:5] not in out.out + out.err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (f"redis://:{SECRET}@h:1/0", "redis://:***@h:1/0"),
        (f"rediss://app:{SECRET}@[::1]:6380/0", "rediss://app:***@[::1]:6380/0"),
        (
            f"rediss://h/0?ssl_ca_certs=/ca.pem&ssl_password={SECRET}",
            "rediss://h/0?ssl_ca_certs=/ca.pem&ssl_password=***",
        ),
        (f"unix:///run/redis.sock?password={SECRET}", "unix:///run/redis.sock?password=***"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ],
)
def test_redacted_url_hides_every_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
