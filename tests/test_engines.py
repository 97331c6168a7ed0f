"""The engine scraper: vLLM, SGLang and TGI endpoints on real HTTP ports, recorded exactly.

Each engine is a prometheus_client registry with its published names and bucket lists
(tests/engine_mimic.py) behind a real HTTP server; the store answers on the real redis-server.
What the endpoints say is checked against the requests the test told each engine it served:
the scrapes' deltas, exactly, across a restart, an upgrade of vLLM's names, an engine that
cannot be reached, and OpenMetrics.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.histogram import RELATIVE_ERROR
from metrics_store.settings import Settings
from metrics_store.sources.engines.convert import SeriesMapper
from metrics_store.sources.engines.names import KNOWN_FAMILIES, TABLE, chosen
from metrics_store.sources.engines.parse import OPENMETRICS, Unreadable, parse
from metrics_store.sources.engines.scraper import EngineScraper, metrics_url
from tests.engine_mimic import EngineMimic, EngineServer, Served
from tests.processes import ApiProcess, CliProcess, child_env
from tests.test_otlp import assert_within_bound
from tests.waiting import wait_until

DATA = Path(__file__).parent / "data" / "engines"


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def requests(n: int, seed: int, outcomes: tuple[str, ...] = ("stop",)) -> list[Served]:
    """n requests whose figures stay inside every engine's closed buckets (none in a bucket
    open at either end, whose error is 1), outcomes taken in turn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ttft, tpot, tokens = rng.uniform(0.12, 0.35), rng.uniform(0.012, 0.2), rng.randint(20, 200)
        latency = ttft + tpot * (tokens - 1)
        out.append(Served(latency, ttft, rng.uniform(0.35, 0.9), tokens,
                          outcomes[i % len(outcomes)]))  # fmt: skip
    return out


class Answers(Protocol):
    """An API replica in-process (TestClient) or as a process (ApiProcess)."""

    def get(self, url: str) -> httpx.Response: ...


def timed_of(kind: str, served: list[Served]) -> list[Served]:
    """The requests a latency histogram holds: SGLang's aborted and TGI's failed ones are
    counted apart, in no histogram; vLLM observes every finished request."""
    if kind.startswith("sglang") or kind == "tgi":
        return [r for r in served if r.outcome == "stop"]
    return served


def assert_store_shows(api: Answers, kind: str, served: list[Served]) -> None:
    """Every endpoint's figures for tier Q2 are those of `served` (the scrapes' deltas)."""
    timed = timed_of(kind, served)
    errors = sum(r.outcome == "error" for r in served)
    if timed is not served:
        errors = len(served) - len(timed)  # queries with no latency, all of them errors
    tpot = len(timed) if kind in ("vllm-0.11", "tgi") else sum(r.tokens - 1 for r in timed)
    queries = api.get("/api/metrics/queries").json()
    assert queries["tierDistribution"]["Q2"] == len(served)
    latency_sum_ms = sum(r.latency_s for r in timed) * 1000.0
    assert queries["avgLatencyMs"] == pytest.approx(latency_sum_ms / len(served), abs=0.01)
    tier = api.get("/api/metrics/tiers").json()["tiers"][0]
    assert (tier["name"], tier["requestCount"]) == ("Q2", len(served))
    assert tier["errorRate"] == pytest.approx(errors / len(served), abs=1e-4)
    latency = api.get("/api/metrics/latency?tier=Q2").json()["tiers"][0]
    assert latency["latencyMs"]["count"] == latency["queueTimeMs"]["count"] == len(timed)
    assert latency["tpotMs"]["count"] == tpot
    if kind == "tgi":
        assert latency["ttftMs"] is None  # TGI has no TTFT (TGI #2887)
    else:
        assert latency["ttftMs"]["count"] == len(timed)
    # Classic buckets are coarser than our bins: the error is stated, and kept to.
    bound = latency["relativeError"]
    assert RELATIVE_ERROR < bound < 1.0
    assert_within_bound([r.latency_s * 1000.0 for r in timed], latency["latencyMs"], bound)
    tokens = float(sum(r.tokens for r in timed))
    assert f'llm_generated_tokens_total{{tier="Q2"}} {tokens}' in api.get("/metrics").text


def serve_all(engine: EngineMimic, served: list[Served]) -> list[Served]:
    for request in served:
        engine.serve(request)
    return served


@dataclass
class Scraped:
    """An engine on a real HTTP port, and a scraper of it into tier Q2."""

    engine: EngineMimic
    server: EngineServer
    scraper: EngineScraper

    def scrape(self) -> bool:
        return self.scraper.scrape(self.server.url)


@contextmanager
def scraped(settings: Settings, kind: str, openmetrics: bool = False) -> Iterator[Scraped]:
    engine = EngineMimic(kind)
    server = EngineServer(lambda: engine.exposition(openmetrics)).start()
    scraper = EngineScraper(settings, [server.url], tier="Q2")
    try:
        yield Scraped(engine, server, scraper)
    finally:
        scraper.close()
        server.stop()


@pytest.mark.parametrize("kind", ["vllm-0.11", "vllm-0.10", "sglang", "sglang-old", "tgi"])
def test_each_engine_is_recorded_exactly_from_its_second_scrape(
    settings: Settings, api: TestClient, kind: str
) -> None:
    with scraped(settings, kind) as s:
        serve_all(s.engine, requests(15, seed=1, outcomes=("stop", "error")))
        assert s.scrape()  # the baseline: before anyone watched
        assert api.get("/api/metrics/queries").json()["tierDistribution"]["Q2"] == 0
        served = serve_all(s.engine, requests(60, seed=2, outcomes=("stop",) * 4 + ("error",)))
        assert s.scrape()
        assert_store_shows(api, kind, served)
        assert s.scrape()  # nothing new served: nothing added
        assert_store_shows(api, kind, served)


def test_an_engine_restart_is_a_reset_never_a_negative_delta(
    settings: Settings, api: TestClient
) -> None:
    with scraped(settings, "vllm-0.11") as s:
        s.scrape()
        served = serve_all(s.engine, requests(30, seed=3))
        s.scrape()
        s.engine.restart()  # counters from zero: the value goes down
        served += serve_all(s.engine, requests(5, seed=4))
        s.scrape()
        assert_store_shows(api, "vllm-0.11", served)
        # Restarted again and past the last value at once: the series' _created tells it.
        s.engine.restart()
        served += serve_all(s.engine, requests(12, seed=5))
        s.scrape()
        assert_store_shows(api, "vllm-0.11", served)


def test_an_upgrade_to_vllm_s_new_names_counts_each_figure_once(
    settings: Settings, api: TestClient
) -> None:
    """0.10 exposes per-token TPOT alone; 0.11 also the per-request histogram (taken) and the
    old one, deprecated (left). The figures carry on across the upgrade, none counted twice."""
    with scraped(settings, "vllm-0.10") as s:
        s.scrape()
        before = serve_all(s.engine, requests(10, seed=6))
        s.scrape()
        s.engine.kind = "vllm-0.11"
        s.engine.restart()
        after = serve_all(s.engine, requests(10, seed=7))
        s.scrape()
        latency = api.get("/api/metrics/latency?tier=Q2").json()["tiers"][0]
        assert latency["latencyMs"]["count"] == latency["ttftMs"]["count"] == 20
        assert latency["tpotMs"]["count"] == sum(r.tokens - 1 for r in before) + len(after)


def test_an_unreachable_engine_is_counted_logged_once_and_retried(
    settings: Settings, api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with scraped(settings, "sglang") as s:
        s.scrape()
        s.server.stop()
        served = serve_all(s.engine, requests(8, seed=8))  # while it cannot be reached
        with caplog.at_level(logging.INFO, logger="metrics_store.sources.engines.scraper"):
            assert [s.scrape() for _ in range(3)] == [False] * 3
            health = api.get("/api/metrics/health").json()
            assert health["engineScrapesFailed"] == {s.server.url: 3}
            down = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(down) == 1, "logged once per streak, not per scrape"
            s.server.start()
            assert s.scrape()
            assert any("answering again after 3" in r.getMessage() for r in caplog.records)
        assert_store_shows(api, "sglang", served)  # what it served meanwhile: not lost
        assert api.get("/api/metrics/health").json()["engineScrapesFailed"] == {s.server.url: 3}


def test_openmetrics_answers_are_read_as_openmetrics(settings: Settings, api: TestClient) -> None:
    with scraped(settings, "vllm-0.11", openmetrics=True) as s:
        assert s.engine.exposition(openmetrics=True)[1].startswith(OPENMETRICS)
        s.scrape()
        served = serve_all(s.engine, requests(20, seed=9, outcomes=("stop", "stop", "error")))
        s.scrape()
        assert_store_shows(api, "vllm-0.11", served)


def test_without_a_tier_the_model_label_maps_through_the_tier_map(settings: Settings) -> None:
    mapped = settings.replace(otlp_tier_map="llama-8b=Q3")
    engine = EngineMimic("vllm-0.11")
    engine.serve(Served(1.2, 0.2, 0.3, 10))
    body, content_type = engine.exposition()
    series = parse(body.decode(), content_type, KNOWN_FAMILIES)
    placing = SeriesMapper(mapped).place("http://e/metrics", series, 1)
    assert {p.tier for p in placing.points} == {"Q3"} and not placing.unmapped
    other = EngineMimic("vllm-0.11", model="mystery")
    other.serve(Served(1.2, 0.2, 0.3, 10))
    body, content_type = other.exposition()
    placing = SeriesMapper(mapped).place("u", parse(body.decode(), content_type, KNOWN_FAMILIES), 1)
    assert not placing.points
    assert placing.unmapped["u vllm:e2e_request_latency_seconds mystery"] == 1


@pytest.mark.parametrize(
    ("name", "figures"),
    [
        ("vllm-0.10.prom", {"tpot": "vllm:time_per_output_token_seconds"}),
        ("vllm-0.11.prom", {"tpot": "vllm:request_time_per_output_token_seconds"}),
        ("vllm-0.11.om", {"tpot": "vllm:request_time_per_output_token_seconds"}),
        ("sglang.prom", {"tpot": "sglang:inter_token_latency_seconds"}),
        ("tgi.prom", {"latency": "tgi_request_duration", "failures": "tgi_request_failure"}),
    ],
)
def test_recorded_expositions_give_the_table_s_names(name: str, figures: dict[str, str]) -> None:
    """Recorded answers (tests/data/engines): three requests served, one failed or aborted."""
    text = (DATA / name).read_text()
    kind = OPENMETRICS if name.endswith(".om") else "text/plain; version=0.0.4"
    series = parse(text, kind, KNOWN_FAMILIES)
    by_role = {row.role: family for row, family in chosen({s.family for s in series})}
    assert figures.items() <= by_role.items()
    latency = next(s for s in series if s.family == by_role["latency"])
    assert latency.value == (2 if name.startswith(("sglang", "tgi")) else 3)
    assert sum(latency.counts) == latency.value
    assert {row.engine for row in TABLE} == {"vllm", "sglang", "tgi"}


@pytest.mark.parametrize(
    "text",
    [
        '# TYPE x_seconds histogram\nx_seconds_bucket{le="1"} 2\n',  # no +Inf bucket
        "not an exposition {{{\n",
        '# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{a="b"} NaN\n',
    ],
)
def test_unreadable_text_is_refused_whole(text: str) -> None:
    wanted = {"x_seconds", "vllm:generation_tokens"}
    with pytest.raises(Unreadable):
        parse(text, "text/plain", wanted)


def test_a_url_without_a_path_scrapes_its_metrics() -> None:
    assert metrics_url("10.0.0.3:8000") == "http://10.0.0.3:8000/metrics"
    assert metrics_url("http://h:30000/") == "http://h:30000/metrics"
    assert metrics_url("https://h/prom/metrics") == "https://h/prom/metrics"


def test_metrics_store_scrape_runs_as_a_process(redis_url: str, prefix: str) -> None:
    """`metrics-store scrape URL... --tier --interval`: where it scrapes, one line per engine
    that cannot be reached, and the store's answers through an API replica."""
    engine = EngineMimic("tgi")
    server = EngineServer(engine.exposition).start()
    gone = EngineServer(engine.exposition)  # a port nothing listens on
    env = child_env(redis_url, prefix)
    api = ApiProcess(env)
    args = ["scrape", server.url, gone.url, "--tier", "Q2", "--interval", "200ms"]
    scrape = CliProcess(args, env)
    api.start()
    scrape.start()
    try:
        wait_until(lambda: server.requests >= 2, what="the scraper's baseline and a scrape")
        served = serve_all(engine, requests(25, seed=10, outcomes=("stop",) * 4 + ("error",)))
        wait_until(
            lambda: api.get("/api/metrics/queries").json()["tierDistribution"]["Q2"] == 25,
            what="the 25 requests in /queries",
        )
        assert_store_shows(api, "tgi", served)
        wait_until(
            lambda: (
                api.get("/api/metrics/health").json()["engineScrapesFailed"].get(gone.url, 0) >= 3
            ),
            what="the unreachable engine counted",
        )
        out, err = scrape.stdout_text(), scrape.stderr_text()
        assert f"metrics-store scrape: {server.url}, {gone.url} every 0.2 s into tier Q2" in out
        assert err.count(f"{gone.url} unreachable") == 1, err
    finally:
        scrape.stop()
        api.stop()
        server.stop()
