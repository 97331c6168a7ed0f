"""Objectives for Prometheus: the `llm_slo_*` series on `/metrics` (promtool-clean), and
`metrics-store slo rules`, whose rules promtool checks and whose alerts Prometheus's own rule
engine (`promtool test rules`) fires as `/api/metrics/slo` does, and a real Prometheus running
them beside two replicas agrees with the store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.clock import SystemClock
from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests.processes import ApiProcess, child_env
from tests.prometheus_server import PROMETHEUS_HINT, PrometheusServer, scrape_config
from tests.test_prometheus import samples, value_of
from tests.test_slo_webhook import record
from tests.tools import require_tool
from tests.waiting import wait_for

OBJECTIVES = {
    "objectives": [
        {"name": "q2-latency", "tier": "Q2", "kind": "latency", "thresholdMs": 250, "target": 0.9},
        {"name": "q2-queue", "tier": "Q2", "kind": "latency", "figure": "queue",
         "thresholdMs": 50, "target": 0.9},
        {"name": "availability", "kind": "errors", "target": 0.99},
        {"name": "q2-good", "tier": "Q2", "kind": "combined", "target": 0.9},
    ]
}  # fmt: skip
RULES_FILE = """\
[[objectives]]
name = "q3-latency"
tier = "Q3"
kind = "latency"
thresholdMs = 2000
target = 0.99
"""


def test_metrics_carry_each_objectives_counters_and_burn(settings: Settings) -> None:
    with TestClient(create_app(settings, SystemClock())) as api:
        assert api.put("/api/metrics/slo/definitions", json=OBJECTIVES).is_success
        collector = MetricsCollector(settings)  # judges with the objectives just stored
        try:
            # Q2: 100, 200, 300 and 400 ms (two under 250 ms); queue 10 ms twice, 100 ms
            # twice; the 400-ms query failed. Q3: one query, failed.
            for i, latency in enumerate((100.0, 200.0, 300.0, 400.0)):
                queue = 10.0 if i % 2 == 0 else 100.0
                collector.record_query("Q2", latency, 5, 10.0, i == 3, queue_time_ms=queue)
            collector.record_query("Q3", 50.0, 5, 10.0, is_error=True)
            collector.flush(timeout_s=20)
        finally:
            collector.close()
        text = api.get("/metrics").text
        slo = {o["name"]: o for o in api.get("/api/metrics/slo").json()["objectives"]}
    found = samples(text)

    def series(name: str, **labels: str) -> float:
        return found[name, tuple(sorted(labels.items()))]

    counted = {
        name: (series("llm_slo_good_total", slo=name), series("llm_slo_total", slo=name))
        for name in slo
    }
    # latency 250 ms: 100 and 200 good; queue 50 ms: the two 10-ms ones; availability: the
    # five queries, two failed; combined Q2: not failed, under 250 ms and queue under 50 ms.
    assert counted == {
        "q2-latency": (2, 4),
        "q2-queue": (2, 4),
        "availability": (3, 5),
        "q2-good": (1, 4),
    }
    assert {name: (o["good"], o["total"]) for name, o in slo.items()} == counted
    for name, objective in slo.items():
        for window, rate in objective["burnRates"].items():
            assert series("llm_slo_burn_rate", slo=name, window=window) == pytest.approx(rate)
        remaining = series("llm_slo_error_budget_remaining_ratio", slo=name)
        assert remaining == pytest.approx(objective["errorBudgetRemaining"])
    assert series("llm_queries_good_total", tier="Q2") == 1
    assert series("llm_queries_good_total", tier="Q3") == 0  # judged by availability: failed
    assert ("llm_queries_good_total", (("tier", "Q4"),)) not in found  # never judged
    promtool = require_tool("promtool", install_hint=PROMETHEUS_HINT)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def slo_rules(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "slo", "rules", *args],
        env=child_env("redis://127.0.0.1:1/0", "unused"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


# One hour and a half of one replica's counters: 100 queries a minute, `bad` of them bad.
def _rule_test(bad: int, alerts: list[dict[str, object]]) -> dict[str, object]:
    return {
        "interval": "1m",
        "input_series": [
            {"series": 'llm_slo_total{slo="q3-latency", instance="a"}', "values": "0+100x100"},
            {
                "series": 'llm_slo_good_total{slo="q3-latency", instance="a"}',
                "values": f"0+{100 - bad}x100",
            },
        ],
        "alert_rule_test": [{"eval_time": "90m", "alertname": "SLOBurn", "exp_alerts": alerts}],
    }


def test_the_rules_fire_as_the_store_does(tmp_path: Path) -> None:
    promtool = require_tool("promtool", install_hint=PROMETHEUS_HINT)
    objectives = tmp_path / "slo.toml"
    objectives.write_text(RULES_FILE)
    made = slo_rules(tmp_path, "--file", str(objectives))
    assert made.returncode == 0, made.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text(made.stdout)
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    # 20 % bad against a 1 % budget burns 20x: every pair fires (the 3-day and 1-day windows
    # hold only these 90 minutes); 0.5 % bad burns 0.5x: none does.
    fired = []
    for group in yaml.safe_load(made.stdout)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                fired.append({"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]})
    assert [a["exp_labels"]["severity"] for a in fired] == ["page", "page", "ticket", "ticket"]
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules)], "tests": [_rule_test(20, fired), _rule_test(0, [])]}
        )
    )
    tested = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_bad_objectives_file_is_one_clear_line(tmp_path: Path) -> None:
    objectives = tmp_path / "slo.toml"
    objectives.write_text(RULES_FILE.replace("0.99", "99"))
    made = slo_rules(tmp_path, "--file", str(objectives))
    assert made.returncode == 2
    assert made.stdout == ""
    lines = made.stderr.strip().splitlines()
    assert len(lines) == 1 and "target must be a number between 0 and 1" in lines[0]


@pytest.mark.timeout(180)
def test_a_real_prometheus_evaluating_the_rules_agrees_with_the_store(
    settings: Settings, tmp_path: Path
) -> None:
    binary = require_tool("prometheus", install_hint=PROMETHEUS_HINT)
    env = child_env(settings.redis.url, settings.key_prefix)
    availability = {"objectives": [{"name": "availability", "kind": "errors", "target": 0.9}]}
    with ApiProcess(env) as first, ApiProcess(env) as second:
        put = httpx.put(f"{first.base_url}/api/metrics/slo/definitions", json=availability)
        assert put.is_success, put.text
        made = subprocess.run(
            [sys.executable, "-m", "workers.cli", "slo", "rules"],  # the set stored in Redis
            env=env, capture_output=True, text=True, timeout=60, check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        rules = tmp_path / "rules.yaml"
        rules.write_text(made.stdout)
        targets = [api.base_url.removeprefix("http://") for api in (first, second)]
        config = scrape_config(targets) + f"rule_files: [{str(rules)!r}]\n"
        prometheus = PrometheusServer(binary, tmp_path, targets, config_text=config)
        prometheus.start()
        try:
            # Both replicas scraped at 0 before any query: the increases start from there.
            wait_for(
                lambda: prometheus.query('llm_slo_total{slo="availability"}'),
                lambda found: len(found) == 2,
                30,
                "both replicas' llm_slo_total",
            )
            record(settings, ok=15, failed=5)
            ratio = 'llm_slo:error_ratio:increase5m{slo="availability"}'
            wait_for(lambda: value_of(prometheus, ratio), lambda v: v == pytest.approx(0.25), 30,
                     "Prometheus's 5-minute error ratio")  # fmt: skip
            firing = 'ALERTS{alertname="SLOBurn", alertstate="firing"}'
            wait_for(lambda: prometheus.query(firing), lambda found: len(found) == 1, 30,
                     "the burn alert")  # fmt: skip
            alerts = prometheus.query(firing)
            hourly = value_of(prometheus, 'llm_slo:error_ratio:increase1h{slo="availability"}')
            slo = httpx.get(f"{second.base_url}/api/metrics/slo", timeout=5).json()
        finally:
            prometheus.stop()
    (objective,) = slo["objectives"]
    # The store's burn rate is Prometheus's error ratio over the budget share (1 - 0.9).
    assert objective["burnRates"]["5m"] == pytest.approx(0.25 / 0.1)
    assert hourly is not None
    assert objective["burnRates"]["1h"] == pytest.approx(hourly / 0.1)
    store_firing = [a["windows"] for a in objective["alerts"] if a["firing"]]
    assert store_firing == [alerts[0]["metric"]["windows"]] == ["3d/6h"]  # 2.5x: past 1, not 3
    assert objective["state"] == alerts[0]["metric"]["severity"] == "ticket"
