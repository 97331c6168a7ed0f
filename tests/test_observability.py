"""deploy/: the Prometheus config, its recording rules and the Grafana dashboard, judged by
promtool and by a real Prometheus that scrapes an API replica with the deploy config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from metrics_store.clock import SystemClock
from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests import waiting
from tests.processes import ApiProcess, child_env
from tests.prometheus_server import PROMETHEUS_HINT, PrometheusServer
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "metrics-store.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
TOKEN = "observability-token-of-32-chars-or-more"
# Grafana fills these in before it sends a query; the test does what Grafana would.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# The latency histograms come with the latency-distributions issue; their series may not be
# served yet, and a query over a missing series still runs (it returns nothing).
PENDING_HISTOGRAMS = ("llm_query_latency_seconds", "llm_time_to_first_token_seconds")
SERIES_NAME = re.compile(r"\b(?:[a-z]+:)?llm_[a-z0-9_]+(?::[a-z0-9_]+)?\b")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def all_panels() -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in all_panels() for t in p.get("targets", [])]


def recording_rules() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def as_grafana_sends_it(expr: str) -> str:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def with_token_enabled(config_text: str) -> str:
    """deploy/prometheus/prometheus.yml with the documented authorization lines uncommented."""
    enabled = re.sub(
        r"^(\s*)# ( *(?:authorization:|type: Bearer|credentials_file: .*))$",
        r"\1\2",
        config_text,
        flags=re.MULTILINE,
    )
    assert enabled != config_text, "the commented authorization block is gone"
    return enabled


def token_workdir(workdir: Path) -> Path:
    """A copy of deploy/prometheus/ with the token enabled and its secret file written."""
    shutil.copy(PROMETHEUS_DIR / "rules.yml", workdir / "rules.yml")
    secret = yaml.safe_load(with_token_enabled((PROMETHEUS_DIR / "prometheus.yml").read_text()))
    credentials = secret["scrape_configs"][0]["authorization"]["credentials_file"]
    (workdir / credentials).parent.mkdir(parents=True, exist_ok=True)
    (workdir / credentials).write_text(TOKEN + "\n")
    return workdir / credentials


def deploy_config_for(target: str) -> str:
    """The deploy config, token enabled, pointed at `target` and evaluated every second."""
    config = yaml.safe_load(with_token_enabled((PROMETHEUS_DIR / "prometheus.yml").read_text()))
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [target]
    return str(yaml.safe_dump(config))


# --- promtool ---------------------------------------------------------------------------------
def test_promtool_accepts_the_config_the_rules_and_the_token_variant(tmp_path: Path) -> None:
    promtool = require_tool("promtool", install_hint=PROMETHEUS_HINT)
    config = PROMETHEUS_DIR / "prometheus.yml"
    outputs = []
    for command in (["check", "config", str(config)],
                    ["check", "rules", str(PROMETHEUS_DIR / "rules.yml")]):  # fmt: skip
        checked = subprocess.run([promtool, *command], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        outputs.append(checked.stdout + checked.stderr)
    assert "1 rule files found" in outputs[0]  # the rules are referenced, not only present
    token_workdir(tmp_path)
    (tmp_path / "prometheus.yml").write_text(with_token_enabled(config.read_text()))
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'llm_queries_total{{tier="Q2", error="false"}}'
        values: '0+9x10'
      - series: 'llm_queries_total{{tier="Q2", error="true"}}'
        values: '0+1x10'
      - series: 'llm_query_latency_seconds_bucket{{tier="Q2", le="0.25"}}'
        values: '0+50x10'
      - series: 'llm_query_latency_seconds_bucket{{tier="Q2", le="0.5"}}'
        values: '0+90x10'
      - series: 'llm_query_latency_seconds_bucket{{tier="Q2", le="1"}}'
        values: '0+99x10'
      - series: 'llm_query_latency_seconds_bucket{{tier="Q2", le="+Inf"}}'
        values: '0+100x10'
      - series: 'llm_routing_decisions_total{{job="j", tier="Q2", fallback="false"}}'
        values: '0+3x10'
      - series: 'llm_routing_decisions_total{{job="j", tier="Q3", fallback="true"}}'
        values: '0+1x10'
    promql_expr_test:
      - expr: round(tier:llm_queries:rate5m * 600)
        eval_time: 10m
        exp_samples: [{{labels: '{{tier="Q2"}}', value: 100}}]
      - expr: round(tier:llm_queries_errors:ratio_rate5m * 1000)
        eval_time: 10m
        exp_samples: [{{labels: '{{tier="Q2"}}', value: 100}}]
      - expr: round(tier:llm_query_latency_seconds:p50_rate5m * 1000)
        eval_time: 10m
        exp_samples: [{{labels: '{{tier="Q2"}}', value: 250}}]
      - expr: round(tier:llm_query_latency_seconds:p99_rate5m * 1000)
        eval_time: 10m
        exp_samples: [{{labels: '{{tier="Q2"}}', value: 1000}}]
      - expr: round(job:llm_routing_decisions_fallback:ratio_rate5m * 1000)
        eval_time: 10m
        exp_samples: [{{labels: '{{job="j"}}', value: 250}}]
"""


def test_the_recording_rules_compute_what_their_names_say(tmp_path: Path) -> None:
    """Known counter and bucket series in, per-tier rate, error ratio, p50 and p99 out."""
    promtool = require_tool("promtool", install_hint=PROMETHEUS_HINT)
    tests = tmp_path / "rules_test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(PROMETHEUS_DIR / "rules.yml"))))
    checked = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- the dashboard ----------------------------------------------------------------------------
def test_the_dashboard_has_the_guides_panels_on_the_provisioned_datasource() -> None:
    rows = {p["title"] for p in dashboard()["panels"] if p["type"] == "row"}
    assert rows >= {"Query rate", "Tiers", "Resources", "Routing", "Latency"}
    titles = " ".join(p["title"] for p in all_panels())
    assert "latency percentiles" in titles.lower() and "first token" in titles.lower()
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    for panel in all_panels():
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    assert len({p["id"] for p in all_panels()}) == len(all_panels())  # Grafana needs unique ids


def test_every_series_named_in_the_dashboard_and_rules_is_served_or_recorded(
    settings: Settings,
) -> None:
    """A typo in a series name would still 'run' (to an empty answer): catch it here."""
    with TestClient(create_app(settings, SystemClock())) as client:
        text = client.get("/metrics").text
    # From the HELP/TYPE lines: a family is listed even while it has no sample.
    families = list(text_string_to_metric_families(text))
    served = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    served |= {f"{h}{end}" for h in PENDING_HISTOGRAMS for end in ("_bucket", "_sum", "_count")}
    rules = recording_rules()
    known = served | set(rules)
    exprs = dashboard_exprs() + list(rules.values())
    named = {name for expr in exprs for name in SERIES_NAME.findall(expr)}
    assert named and named <= known, named - known
    used_rules = {name for expr in dashboard_exprs() for name in SERIES_NAME.findall(expr)}
    assert used_rules & set(rules)  # the dashboard reads the recorded p99


# --- a real Prometheus with the deploy config ---------------------------------------------------
@pytest.fixture
def guarded_replica(settings: Settings) -> Iterator[ApiProcess]:
    env = child_env(
        settings.redis.url, settings.key_prefix, METRICS_NODE="obs-node", METRICS_API_TOKEN=TOKEN
    )
    replica = ApiProcess(env)
    replica.start()
    yield replica
    replica.stop()


@pytest.fixture
def deploy_prometheus(tmp_path: Path, guarded_replica: ApiProcess) -> Iterator[PrometheusServer]:
    binary = require_tool("prometheus", install_hint=PROMETHEUS_HINT)
    token_workdir(tmp_path)
    target = guarded_replica.base_url.removeprefix("http://")
    server = PrometheusServer(binary, tmp_path, [], config_text=deploy_config_for(target))
    server.start()
    yield server
    server.stop()


def record_traffic(settings: Settings) -> None:
    collector = MetricsCollector(settings)
    try:
        for i in range(20):
            collector.record_query("Q2", 100.0 + i, 10, 50.0, is_error=i % 10 == 0)
            collector.record_routing_decision("SIMPLE", "Q2", 0.9, 3.0, is_fallback=i % 4 == 0)
        collector.flush(timeout_s=20)
    finally:
        collector.close()


def wait_for(prometheus: PrometheusServer, promql: str, timeout_s: float = 40) -> float:
    """The first positive value of `promql` (one series); fails after `timeout_s`."""

    def value() -> float:
        result = prometheus.query(promql)
        return float(result[0]["value"][1]) if result else 0.0

    try:
        return waiting.wait_for(value, lambda v: v > 0, timeout_s, f"{promql} above 0")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; log: {prometheus.log_text()[-1500:]}") from None


def test_the_deploy_config_scrapes_with_the_token_and_every_query_runs(
    settings: Settings, guarded_replica: ApiProcess, deploy_prometheus: PrometheusServer
) -> None:
    assert httpx.get(f"{guarded_replica.base_url}/metrics").status_code == 401
    wait_for(deploy_prometheus, 'up{job="metrics-store"}')  # the token file was sent
    wait_for(deploy_prometheus, "count(llm_queries_total)")  # a scrape before the traffic
    record_traffic(settings)
    # The recording rules run on the scraped counters: 20 queries, 2 of them errors.
    wait_for(deploy_prometheus, 'job:llm_queries:rate5m{job="metrics-store"}')
    ratio = wait_for(deploy_prometheus, 'tier:llm_queries_errors:ratio_rate5m{tier="Q2"}')
    assert ratio == pytest.approx(0.1)
    groups = httpx.get(f"{deploy_prometheus.url}/api/v1/rules", timeout=10).json()
    rules = [rule for group in groups["data"]["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == set(recording_rules())
    assert all(rule["health"] == "ok" for rule in rules), rules
    for expr in dashboard_exprs() + list(recording_rules().values()):
        deploy_prometheus.query(as_grafana_sends_it(expr))  # raises on any query error
