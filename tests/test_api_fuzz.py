"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis), against a real API process.

Every operation of /api/openapi.json gets valid and invalid requests (positive and negative
generation); every response must be documented and in the schema for its status, none a 5xx,
and every error in the contract's body.
A deeper run: SCHEMATHESIS_MAX_EXAMPLES=1000 pytest tests/test_api_fuzz.py (docs/hostile-input.md).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from metrics_store.clock import ManualClock
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.processes import ApiProcess, child_env
from workers.redis_process import RedisServerProcess

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


def seed(redis_url: str, prefix: str) -> None:
    """A few events, so the 200 answers carry data rather than zeros only."""
    store = Settings(redis_url=redis_url, key_prefix=prefix, node="node-a")
    collector = MetricsCollector(store, clock=ManualClock(time.time()))
    collector.record_query("Q2", 812.5, 128, 640.0)
    collector.record_query("Q3", 99.0, 0, 0.0, is_error=True)
    collector.record_routing_decision("COMPLEX", "Q4", 0.75, 1.5, is_fallback=True)
    collector.update_model_availability("Q2", 1, 2)
    collector.close()


def delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=Keys(prefix).scan_pattern, count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(scope="module")
def fuzzed_api(redis_server: RedisServerProcess) -> Iterator[ApiProcess]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    seed(redis_server.url, prefix)
    try:
        with ApiProcess(child_env(redis_server.url, prefix, METRICS_NODE="node-a")) as api:
            yield api
    finally:
        delete_prefix(redis_server.url, prefix)


def load_schema() -> BaseSchema:
    """The app's own OpenAPI document, built in process: no server is needed to collect tests."""
    loaded = schemathesis.openapi.from_dict(create_app().openapi())
    loaded.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=MAX_EXAMPLES
    )
    return loaded


schema = load_schema()


def test_the_fuzzed_schema_is_the_served_one(fuzzed_api: ApiProcess) -> None:
    assert fuzzed_api.get("/api/openapi.json").json() == create_app().openapi()


def assert_error_body(body: object) -> None:
    assert isinstance(body, dict)
    assert set(body) == {"error", "message", "details"}
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_in_schema_and_never_5xx(
    case: schemathesis.Case, fuzzed_api: ApiProcess
) -> None:
    checks = CHECKS
    if case.operation.path == "/api/metrics/slo/definitions":
        # A set of objectives has rules no JSON Schema states (each name once, a window within
        # the history kept): a schema-valid set may rightly get 422. Everything else holds.
        checks = [check for check in CHECKS if check is not positive_data_acceptance]
    response = case.call_and_validate(base_url=fuzzed_api.base_url, checks=checks, timeout=10)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert_error_body(response.json())
