"""`/metrics`: the fleet's figures for Prometheus, judged by prometheus_client's parsers,
Debian's promtool, and a real Prometheus scraping two replicas."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from pydantic import SecretStr

from api.main import create_app
from metrics_store.clock import SystemClock
from metrics_store.live.snapshots import NodeSnapshot, SnapshotWriter
from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests.processes import ApiProcess, child_env
from tests.prometheus_server import PROMETHEUS_HINT, PrometheusServer
from tests.tools import require_tool
from tests.waiting import wait_for

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def record_known_events(settings: Settings) -> None:
    collector = MetricsCollector(settings)
    try:
        for i in range(7):
            collector.record_query("Q2", 100.0 + i, 10, 50.0, ttft_ms=20.0)
        collector.record_query("Q3", 900.0, 5, 20.0, is_error=True)
        collector.record_routing_decision("SIMPLE", "Q2", 0.9, 3.0)
        collector.record_routing_decision("COMPLEX", "Q4", 0.4, 5.0, is_fallback=True)
        collector.update_model_availability("Q2", 2, 3)
        collector.flush(timeout_s=20)
    finally:
        collector.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in parse_text(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_counters_hold_what_was_recorded(settings: Settings) -> None:
    record_known_events(settings)
    with TestClient(create_app(settings, SystemClock())) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(answer.text)
    assert found["llm_queries_total", (("error", "false"), ("tier", "Q2"))] == 7
    assert found["llm_queries_total", (("error", "true"), ("tier", "Q3"))] == 1
    assert found["llm_queries_total", (("error", "false"), ("tier", "Q4"))] == 0
    assert found["llm_generated_tokens_total", (("tier", "Q2"),)] == 70
    key = ("complexity", "COMPLEX"), ("fallback", "true"), ("tier", "Q4")
    assert found["llm_routing_decisions_total", key] == 1
    assert found["llm_model_replicas", (("tier", "Q2"),)] == 3
    assert found["llm_model_replicas_available", (("tier", "Q2"),)] == 2
    # Q2's seven latencies, 100-106 ms, all lie between the edges 0.0625 s and 0.125 s.
    latency = "llm_query_latency_seconds"
    assert found[f"{latency}_count", (("tier", "Q2"),)] == 7
    assert found[f"{latency}_bucket", (("le", "0.0625"), ("tier", "Q2"))] == 0
    assert found[f"{latency}_bucket", (("le", "0.125"), ("tier", "Q2"))] == 7
    assert found[f"{latency}_bucket", (("le", "+Inf"), ("tier", "Q2"))] == 7
    assert found[f"{latency}_sum", (("tier", "Q2"),)] == pytest.approx(0.721)
    ttft = "llm_time_to_first_token_seconds"
    assert found[f"{ttft}_count", (("tier", "Q2"),)] == 7
    assert found[f"{ttft}_bucket", (("le", "0.03125"), ("tier", "Q2"))] == 7  # 20 ms each
    assert found[f"{ttft}_count", (("tier", "Q3"),)] == 0  # recorded without TTFT


def test_openmetrics_when_asked_and_its_parser_accepts_it(settings: Settings) -> None:
    record_known_events(settings)
    with TestClient(create_app(settings, SystemClock())) as client:
        answer = client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in parse_openmetrics(answer.text)}
    assert families["llm_queries"].type == "counter"
    assert answer.text.endswith("# EOF\n")


def test_promtool_finds_nothing_to_complain_about(settings: Settings) -> None:
    promtool = require_tool("promtool", install_hint=PROMETHEUS_HINT)
    record_known_events(settings)
    with TestClient(create_app(settings, SystemClock())) as client:
        text = client.get("/metrics").text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""  # not even a warning


def test_the_token_guards_metrics_too(settings: Settings) -> None:
    guarded = settings.replace(api_token=SecretStr("s3cret-token-of-32-characters-xx"))
    with TestClient(create_app(guarded, SystemClock())) as client:
        refused = client.get("/metrics")
        allowed = client.get(
            "/metrics", headers={"Authorization": "Bearer s3cret-token-of-32-characters-xx"}
        )
    assert refused.status_code == 401 and refused.json()["error"]
    assert allowed.status_code == 200


# --- a real Prometheus scraping two replicas ------------------------------------------------
@pytest.fixture
def replicas(settings: Settings) -> Iterator[list[ApiProcess]]:
    env = child_env(settings.redis.url, settings.key_prefix, METRICS_NODE="prom-node")
    started = [ApiProcess(env), ApiProcess(env)]
    for replica in started:
        replica.start()
    yield started
    for replica in started:
        replica.stop()


@pytest.fixture
def prometheus(tmp_path: Path, replicas: list[ApiProcess]) -> Iterator[PrometheusServer]:
    binary = require_tool("prometheus", install_hint=PROMETHEUS_HINT)
    targets = [replica.base_url.removeprefix("http://") for replica in replicas]
    server = PrometheusServer(binary, tmp_path, targets)
    server.start()
    yield server
    server.stop()


def value_of(prometheus: PrometheusServer, promql: str) -> float | None:
    """The first sample's value of `promql`, or None while it has none."""
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


def wait_for_value(prometheus: PrometheusServer, promql: str, expected: float) -> None:
    what = f"{promql} to be {expected}"
    wait_for(lambda: value_of(prometheus, promql), lambda v: v == expected, 30, what)


def test_a_real_prometheus_sees_the_fleet_and_no_reset_across_a_replica_restart(
    settings: Settings, replicas: list[ApiProcess], prometheus: PrometheusServer
) -> None:
    record_known_events(settings)
    # Two replicas, one fleet: each target reports the same totals.
    wait_for_value(prometheus, "sum(llm_queries_total) / count(up)", 8)
    wait_for_value(prometheus, f'sum(llm_queries_total{{instance="{_target(replicas[0])}"}})', 8)
    replicas[0].stop()
    # The same address, a new process: counters live in Redis, so it resumes, not resets.
    replicas[0] = ApiProcess(replicas[0].env, port=replicas[0].port)
    replicas[0].start()
    record_known_events(settings)
    wait_for_value(prometheus, f'sum(llm_queries_total{{instance="{_target(replicas[0])}"}})', 16)
    # A couple more scrapes of the restarted replica, so resets() would see a fall to zero.
    scrapes = f'count_over_time(up{{instance="{_target(replicas[0])}"}}[5m])'
    seen = value_of(prometheus, scrapes) or 0.0
    wait_for(lambda: value_of(prometheus, scrapes), lambda n: (n or 0) >= seen + 2, 30, scrapes)
    wait_for_value(prometheus, "sum(resets(llm_queries_total[5m]))", 0)
    # The exact median of Q2's latencies (103 ms) lies in the bucket (0.0625 s, 0.125 s].
    median = prometheus.query(
        'histogram_quantile(0.5, sum by (le) (llm_query_latency_seconds_bucket{tier="Q2"}))'
    )
    assert 0.0625 < float(median[0]["value"][1]) <= 0.125


def _target(replica: ApiProcess) -> str:
    return replica.base_url.removeprefix("http://")


def test_metrics_answers_503_with_the_error_body_while_redis_is_away(
    settings: Settings,
) -> None:
    away = settings.replace(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(away, SystemClock())) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 503
    assert answer.json()["error"] == "StoreUnavailable"
    assert answer.status_code == httpx.codes.SERVICE_UNAVAILABLE


def test_fleet_wide_figures_are_counted_once_and_agree_with_resources(
    settings: Settings,
) -> None:
    """Every node's sampler reads the same queues and the same Redis: /metrics must not
    repeat them per node, and must give the figure /resources gives."""
    # node-b writes last: by Redis's clock, its snapshot is the freshest.
    readings = {"node-a": (7, 3, 10 * 2**20), "node-b": (9, 4, 12 * 2**20)}
    client = redis.Redis.from_url(settings.redis.url)
    writer = SnapshotWriter(client, settings)
    for node, (queued, active, memory) in readings.items():
        snapshot = NodeSnapshot(
            node=node,
            sampled_at=time.time(),
            jobs_queued=queued,
            jobs_active=active,
            redis_used_memory_bytes=memory,
        )
        writer.write(snapshot)
    client.close()
    with TestClient(create_app(settings, SystemClock())) as api:
        resources = api.get("/api/metrics/resources").json()
        found = samples(api.get("/metrics").text)
    assert {n["node"] for n in resources["nodes"]} == {"node-a", "node-b"}
    assert not [name for name, _ in found if name.startswith("llm_node_jobs")]
    assert found["llm_jobs_queued", ()] == resources["threadPoolStatus"]["queued"] == 9
    assert found["llm_jobs_active", ()] == resources["threadPoolStatus"]["active"] == 4
    assert found["llm_redis_used_memory_bytes", ()] == resources["redisCacheSize"] == 12 * 2**20
