"""The demo backend routes by complexity, falls back when a tier is down, records each prompt."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from metrics_store.read.reader import MetricsReader
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.harness import StoreHarness, make_harness
from workers.demo_backend import DemoBackend, GenerationFailed


@pytest.fixture
def harness(settings: Settings) -> Iterator[StoreHarness]:
    h = make_harness("redis", settings, T0)
    yield h
    h.close()


@pytest.fixture
def backend(harness: StoreHarness) -> DemoBackend:
    return DemoBackend(
        harness.settings.tiers,
        harness.settings.complexities,
        harness.collector,
        rng=random.Random(7),
        sleep=lambda seconds: None,
    )


def test_each_complexity_goes_to_its_tier(backend: DemoBackend) -> None:
    assert backend.route("SIMPLE") == ("Q2", False)
    assert backend.route("MODERATE") == ("Q3", False)
    assert backend.route("COMPLEX") == ("Q4", False)


def test_a_tier_with_no_model_up_falls_back_to_the_nearest(backend: DemoBackend) -> None:
    backend.pool.available["Q4"] = 0
    assert backend.route("COMPLEX") == ("Q3", True)
    backend.pool.available["Q3"] = 0
    assert backend.route("COMPLEX") == ("Q2", True)
    assert backend.route("MODERATE") == ("Q2", True)
    backend.pool.available["Q4"] = 1
    assert backend.route("MODERATE") == ("Q4", True)  # equally near: the larger tier wins


def test_scores_stay_in_range_and_match_their_class(backend: DemoBackend) -> None:
    rng = random.Random(1)
    for _ in range(200):
        prompt = "x" * rng.randint(0, 600)
        complexity, score = backend.score(prompt)
        assert 0.0 <= score <= 10.0
        assert complexity == ("SIMPLE", "MODERATE", "COMPLEX")[min(int(score / 10 * 3), 2)]


def test_handled_prompts_are_recorded_failures_included(
    backend: DemoBackend, harness: StoreHarness
) -> None:
    failures = 0
    for i in range(300):
        try:
            backend.handle("prompt " * (i % 60))
        except GenerationFailed:
            failures += 1
    harness.collector.flush()
    queries = harness.read(MetricsReader.queries)
    routing = harness.read(MetricsReader.routing)
    tiers = harness.read(MetricsReader.tiers).tiers
    assert queries.totalQueries == 300
    assert routing.accuracyMetrics.totalDecisions == 300
    errors = sum(round(t.errorRate * t.requestCount) for t in tiers)
    assert errors == failures
