"""Service-level objectives: definitions checked whole, budgets and burn rates exact against a
plain count of the recorded queries, on every topology, and the API's endpoints."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.errors import InvalidObjectives
from metrics_store.histogram import bin_index, upper_bound_s
from metrics_store.read.shapes import SloMetrics
from metrics_store.record.judge import QueryJudge
from metrics_store.settings import Settings
from metrics_store.slo.burn import BURN_PAIRS, BURN_WINDOWS_S, Counts, assess, burn_rate
from metrics_store.slo.definitions import Objective, parse_objectives
from metrics_store.slo.files import read_objectives_file
from metrics_store.slo.store import SharedObjectives
from tests.conftest import T0
from tests.harness import StoreHarness
from tests.processes import ApiProcess, child_env
from tests.waiting import wait_until

TIERS = ["Q2", "Q3", "Q4"]
MONTH_S = 31 * 86_400
DAY = 86_400


def objectives(*entries: dict[str, Any]) -> list[Objective]:
    return parse_objectives({"objectives": list(entries)}, TIERS, MONTH_S)


LATENCY_Q3 = {
    "name": "q3-latency",
    "tier": "Q3",
    "kind": "latency",
    "figure": "latency",
    "thresholdMs": 2000,
    "target": 0.99,
}
ERRORS_ALL = {"name": "errors", "kind": "errors", "target": 0.999, "window": "30d"}
TTFT_Q2 = {
    "name": "q2-ttft",
    "tier": "Q2",
    "kind": "latency",
    "figure": "ttft",
    "thresholdMs": 500,
    "target": 0.95,
    "window": "7d",
}


# --- definitions ---------------------------------------------------------------------------
def test_a_definition_reads_as_given_with_its_defaults() -> None:
    (latency, errors) = objectives(LATENCY_Q3, ERRORS_ALL)
    assert (latency.tier, latency.window_s, latency.figure) == ("Q3", 30 * DAY, "latency")
    assert (errors.tier, errors.figure, errors.threshold_ms) == ("*", None, None)
    # The threshold snaps to the nearest bin edge: counts below it are exact.
    effective = latency.effective_threshold_ms
    assert effective is not None and abs(effective - 2000) / 2000 < 0.011
    assert bin_index(effective) == latency.threshold_bin
    assert bin_index(effective * 1.0001) == latency.threshold_bin + 1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"target": 1.0}, "target must be a number between 0 and 1"),
        ({"target": "0.99"}, "target must be a number between 0 and 1"),
        ({"tier": "Q9"}, "tier must be one of Q2, Q3, Q4 or '*'"),
        ({"kind": "speed"}, "kind must be one of latency, errors, combined"),
        ({"figure": "tokens"}, "figure must be one of latency, ttft, queue, tpot"),
        ({"thresholdMs": -5}, "thresholdMs must be a number of milliseconds"),
        ({"window": "40d"}, "window must be seconds or a number"),
        ({"window": "1d"}, "window must be seconds or a number"),
        ({"name": "has space"}, "name must match"),
        ({"threshold_ms": 5}, "unknown fields threshold_ms"),
    ],
)
def test_a_bad_definition_names_its_problem(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidObjectives) as refused:
        objectives(ERRORS_ALL, {**LATENCY_Q3, **change})
    assert len(refused.value.problems) == 1
    assert problem in refused.value.problems[0]
    assert "objectives[1]" in refused.value.problems[0]
    assert isinstance(refused.value, ValueError)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(InvalidObjectives) as refused:
        objectives({**ERRORS_ALL, "target": 2}, {**LATENCY_Q3, "name": "errors", "kind": "x"})
    assert len(refused.value.problems) == 2
    with pytest.raises(InvalidObjectives, match="used twice"):
        objectives(ERRORS_ALL, ERRORS_ALL)
    with pytest.raises(InvalidObjectives, match="only"):
        objectives({**ERRORS_ALL, "thresholdMs": 5})


def test_files_in_toml_and_yaml_read_the_same(tmp_path: Path) -> None:
    settings = Settings(tiers=TIERS)
    toml = tmp_path / "slo.toml"
    toml.write_text(
        '[[objectives]]\nname = "q3-latency"\ntier = "Q3"\nkind = "latency"\n'
        "thresholdMs = 2000\ntarget = 0.99\n\n"
        '[[objectives]]\nname = "errors"\nkind = "errors"\ntarget = 0.999\nwindow = "30d"\n'
    )
    yaml = tmp_path / "slo.yaml"
    yaml.write_text(
        "objectives:\n"
        "  - {name: q3-latency, tier: Q3, kind: latency, thresholdMs: 2000, target: 0.99}\n"
        "  - {name: errors, kind: errors, target: 0.999, window: 30d}\n"
    )
    expected = objectives({**LATENCY_Q3}, ERRORS_ALL)
    assert read_objectives_file(toml, settings) == expected
    assert read_objectives_file(yaml, settings) == expected
    broken = tmp_path / "broken.toml"
    broken.write_text("[[objectives]\n")
    with pytest.raises(InvalidObjectives, match=r"broken\.toml"):
        read_objectives_file(broken, settings)


# --- burn rates ----------------------------------------------------------------------------
def test_burn_rates_budget_and_state_follow_the_workbook() -> None:
    target, window_s = 0.99, 30 * DAY
    assert burn_rate(Counts(good=990, total=1000), target) == pytest.approx(1.0)
    assert burn_rate(Counts(good=0, total=0), target) is None  # no query: no rate, not 0
    # 20 % bad over the last hour and 5 minutes: 20x the budget, past 14.4: a page.
    hot = dict.fromkeys(BURN_WINDOWS_S, Counts(good=800, total=1000))
    budget = assess(hot, Counts(good=99_500, total=100_000), target, window_s)
    assert budget.state == "page"
    assert budget.remaining_ratio == pytest.approx(0.5)  # 500 bad of 1,000 allowed
    assert budget.exhausted_in_s == pytest.approx(0.5 * window_s / 20)
    # The long window alone is not enough: the short one must burn too (the alert resets).
    cooled = {**hot, 300: Counts(good=1000, total=1000), 1800: Counts(good=1000, total=1000)}
    cooled[6 * 3600] = cooled[86_400] = cooled[3 * 86_400] = Counts(good=1000, total=1000)
    assert assess(cooled, Counts(good=1, total=1), target, window_s).state == "ok"
    # 4 % bad for days: 4x, a ticket (1 d / 2 h at 3x), no page.
    slow = dict.fromkeys(BURN_WINDOWS_S, Counts(good=960, total=1000))
    assert assess(slow, Counts(good=960, total=1000), target, window_s).state == "ticket"
    spent = assess(slow, Counts(good=900, total=1000), target, window_s)
    assert spent.remaining_ratio == pytest.approx(-9.0) and spent.exhausted_in_s == 0.0
    assert [pair.label for pair in BURN_PAIRS] == ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]


# --- answers, exact against a plain count ----------------------------------------------------
# Queries recorded at these ages (seconds before the answer), away from every window's edge.
AGES = [60, 20 * 60, 50 * 60, 90 * 60, 4 * 3600, 12 * 3600, 2 * DAY, 5 * DAY, 10 * DAY, 40 * DAY]


def record_history(h: StoreHarness) -> list[tuple[float, str, float, bool, float | None]]:
    """Queries at each age, of every tier, with latencies around the thresholds and some
    errors; returns what was recorded as (age, tier, latency, error, ttft)."""
    recorded = []
    for n, age in enumerate(AGES):
        h.clock.set(T0 - age)
        for i in range(12):
            tier = TIERS[i % 3]
            latency = [150.0, 1500.0, 1990.0, 2100.0, 3000.0, 900.0][(i + n) % 6]
            error = (i * 7 + n) % 11 == 0
            ttft = [100.0, 499.0, 520.0, None][(i + 2 * n) % 4]
            h.collector.record_query(tier, latency, 10, latency / 2, error, ttft_ms=ttft)
            recorded.append((age, tier, latency, error, ttft))
        h.collector.flush(timeout_s=30)
    h.clock.set(T0)
    return recorded


def expected_counts(
    objective: Objective, recorded: list[tuple[float, str, float, bool, float | None]], span: int
) -> Counts:
    good = total = 0
    for age, tier, latency, error, ttft in recorded:
        if age >= span or not objective.covers(tier):
            continue
        if objective.kind == "errors":
            total += 1
            good += not error
            continue
        value = latency if objective.figure == "latency" else ttft
        if value is None:
            continue
        total += 1
        assert objective.effective_threshold_ms is not None
        good += value <= objective.effective_threshold_ms
    return Counts(good, total)


def test_each_answer_counts_exactly_the_queries_of_its_windows(store: StoreHarness) -> None:
    defined = objectives(LATENCY_Q3, ERRORS_ALL, TTFT_Q2)
    recorded = record_history(store)
    store.read(lambda reader: reader.objectives.replace(defined))
    answer: SloMetrics = store.read(lambda reader: reader.slo())
    assert answer.definitionsVersion == 1
    assert [o.name for o in answer.objectives] == ["q3-latency", "errors", "q2-ttft"]
    for objective, status in zip(defined, answer.objectives, strict=True):
        compliance = expected_counts(objective, recorded, objective.window_s)
        assert (status.good, status.total) == (compliance.good, compliance.total), status.name
        windows = {s: expected_counts(objective, recorded, s) for s in BURN_WINDOWS_S}
        budget = assess(windows, compliance, objective.target, objective.window_s)
        assert status.state == budget.state
        assert status.errorBudgetRemaining == pytest.approx(budget.remaining_ratio, abs=1e-6)
        rates = list(status.burnRates.values())
        assert rates == pytest.approx([budget.rates[s] for s in BURN_WINDOWS_S], abs=1e-6)
        assert status.effectiveThresholdMs == (
            None
            if objective.effective_threshold_ms is None
            else pytest.approx(objective.effective_threshold_ms, abs=1e-3)
        )
    # The 40-day-old queries are past every compliance window; the 10-day-old ones only in 30 d.
    errors = answer.objectives[1]
    assert errors.total == 12 * (len(AGES) - 1)
    assert answer.objectives[2].total < answer.objectives[1].total


def test_an_effective_threshold_is_a_bin_edge_within_the_bins_error() -> None:
    for threshold in (0.5, 1.0, 37.0, 500.0, 2000.0, 123_456.0):
        (objective,) = objectives({**LATENCY_Q3, "thresholdMs": threshold})
        effective = objective.effective_threshold_ms
        assert effective is not None
        assert math.isclose(effective, upper_bound_s(objective.threshold_bin or 0) * 1000)
        assert abs(effective - threshold) / threshold <= 0.011


# --- the API -------------------------------------------------------------------------------
@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_put_then_get_on_another_replica(settings: Settings) -> None:
    body = {"objectives": [LATENCY_Q3, ERRORS_ALL]}
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert second.get("/api/metrics/slo").json()["objectives"] == []
        put = first.put("/api/metrics/slo/definitions", json=body)
        assert put.status_code == 200, put.text
        assert put.json()["version"] == 1
        # The other replica answers from the stored set at once.
        answer = second.get("/api/metrics/slo").json()
        assert [o["name"] for o in answer["objectives"]] == ["q3-latency", "errors"]
        assert answer["definitionsVersion"] == 1
        assert {o["state"] for o in answer["objectives"]} == {"ok"}
        assert second.get("/api/metrics/slo/definitions").json()["objectives"][0] == {
            **LATENCY_Q3,
            "window": "30d",
        }
        # The same set again changes nothing.
        assert first.put("/api/metrics/slo/definitions", json=body).json()["version"] == 1


def test_a_bad_put_gets_422_and_the_stored_set_stays(api: TestClient) -> None:
    assert api.put("/api/metrics/slo/definitions", json={"objectives": [ERRORS_ALL]}).is_success
    bad = {"objectives": [ERRORS_ALL, {**LATENCY_Q3, "target": 5, "tier": "nope"}]}
    refused = api.put("/api/metrics/slo/definitions", json=bad)
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"] == "InvalidObjectives"
    assert len(body["details"]["problems"]) == 2
    not_json = api.put(
        "/api/metrics/slo/definitions",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 422 and not_json.json()["error"] == "InvalidObjectives"
    assert "not JSON" in not_json.json()["details"]["problems"][0]
    stored = api.get("/api/metrics/slo/definitions").json()
    assert (stored["version"], [o["name"] for o in stored["objectives"]]) == (1, ["errors"])


def test_the_file_is_stored_when_a_replica_starts(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text("objectives:\n  - {name: errors, kind: errors, target: 0.999}\n")
    with TestClient(create_app(settings.replace(slo_file=str(path)))) as api:
        answer = api.get("/api/metrics/slo").json()
    assert [o["name"] for o in answer["objectives"]] == ["errors"]
    path.write_text("objectives:\n  - {name: errors, kind: errors, target: 2}\n")
    with pytest.raises(InvalidObjectives, match=r"slo\.yaml"):
        create_app(settings.replace(slo_file=str(path)))


# --- combined objectives and goodput, judged as each query is written -------------------------
TTFT_Q3 = {**TTFT_Q2, "name": "q3-ttft", "tier": "Q3", "window": "30d"}
COMBINED_Q3 = {"name": "q3-good", "tier": "Q3", "kind": "combined", "target": 0.95}
# (latency, ttft, error): around both of Q3's thresholds (2000 and 500 ms are bin edges).
QUERIES = [
    (2000.0, 500.0, False),  # at both edges: good
    (2000.1, 100.0, False),  # latency just past: bad
    (150.0, 500.1, False),  # TTFT just past: bad
    (150.0, None, False),  # no TTFT measured: not held against it
    (150.0, 100.0, True),  # failed: bad
    (1999.0, 499.0, False),
]


def plainly_good(tier: str, latency: float, ttft: float | None, error: bool) -> bool:
    if tier != "Q3":
        return not error  # only the errors objective covers Q2 and Q4
    return not error and latency <= 2000.0 and (ttft is None or ttft <= 500.0)


def test_combined_objectives_and_goodput_count_each_query_as_written(store: StoreHarness) -> None:
    store.read(
        lambda reader: reader.objectives.replace(
            objectives(LATENCY_Q3, TTFT_Q3, COMBINED_Q3, ERRORS_ALL)
        )
    )
    collector = store.new_collector()  # it takes the objectives before its first batch
    good = dict.fromkeys(TIERS, 0)
    recorded = dict.fromkeys(TIERS, 0)
    for age in (2 * DAY, 0):  # the older ones count in the compliance window only
        store.clock.set(T0 - age)
        for tier in TIERS:
            for latency, ttft, error in QUERIES:
                collector.record_query(tier, latency, 10, 5.0, error, ttft_ms=ttft)
                if age == 0:
                    recorded[tier] += 1
                    good[tier] += plainly_good(tier, latency, ttft, error)
        collector.flush(timeout_s=30)
    store.clock.set(T0)
    tiers = store.read(lambda reader: reader.tiers()).tiers
    assert {t.name: t.goodCount for t in tiers} == good
    assert good == {"Q2": 5, "Q3": 3, "Q4": 5}
    for entry in tiers:
        assert entry.goodputPerSec == pytest.approx(good[entry.name] / 1800, abs=1e-4)
        assert entry.requestsPerSec == pytest.approx(recorded[entry.name] / 1800, abs=1e-4)
    combined = store.read(lambda reader: reader.slo()).objectives[2]
    assert (combined.name, combined.good, combined.total) == ("q3-good", 2 * 3, 2 * 6)
    assert combined.burnRates["5m"] == pytest.approx(0.5 / 0.05)  # 10x: past 6, not 14.4
    assert [a.firing for a in combined.alerts] == [False, True, True, True]
    assert combined.state == "page"


def test_no_objective_no_goodput(store: StoreHarness) -> None:
    store.collector.record_query("Q2", 10.0, 1, 1.0)
    store.collector.flush(timeout_s=30)
    tiers = store.read(lambda reader: reader.tiers()).tiers
    assert [(t.goodCount, t.goodputPerSec) for t in tiers] == [(None, None)] * 3
    assert tiers[0].requestCount == 1


def test_a_collector_takes_changed_objectives_by_their_version(settings: Settings) -> None:
    harness_settings = settings.replace(tiers=TIERS)
    judge = QueryJudge(harness_settings)
    client = redis.Redis.from_url(settings.redis.url)

    async def store_set(*entries: dict[str, Any]) -> int:
        async_client = aioredis.Redis.from_url(settings.redis.url)
        try:
            shared = SharedObjectives(async_client, settings, None)
            return (await shared.replace(objectives(*entries))).version
        finally:
            await async_client.aclose()

    try:
        judge.refresh(client)
        assert judge.thresholds == {}
        assert asyncio.run(store_set(LATENCY_Q3, COMBINED_Q3)) == 1
        judge.refresh(client)
        assert judge.thresholds == {"Q3": {"latency": 32}}  # 2 s: bin 32 (32 bins a doubling)
        assert asyncio.run(store_set({**LATENCY_Q3, "tier": "*", "thresholdMs": 1000})) == 2
        judge.refresh(client)
        assert judge.thresholds == {tier: {"latency": 0} for tier in TIERS}
    finally:
        client.close()


# --- the same events over processes and replicas -----------------------------------------------
RECORDER = """
import sys
from metrics_store import get_metrics_collector
part, parts = int(sys.argv[1]), int(sys.argv[2])
collector = get_metrics_collector()
for i in range(part, 60, parts):
    latency = [150.0, 1999.0, 2000.0, 2100.0, 2600.0][i % 5]
    collector.record_query("Q3", latency, 10, 5.0, i % 7 == 0, ttft_ms=[100.0, 600.0][i % 2])
collector.flush(timeout_s=30)
"""


@pytest.mark.timeout(120)
def test_events_split_over_processes_answer_alike_on_every_replica(settings: Settings) -> None:
    body = {"objectives": [LATENCY_Q3, TTFT_Q3, COMBINED_Q3, ERRORS_ALL]}
    env = child_env(settings.redis.url, settings.key_prefix)
    with ApiProcess(env) as first, ApiProcess(env) as second:
        assert httpx.put(f"{first.base_url}/api/metrics/slo/definitions", json=body).is_success
        recorders = [
            subprocess.run(
                [sys.executable, "-c", RECORDER, str(part), "3"],
                env={**env, "METRICS_NODE": f"recorder-{part}"},
                timeout=60,
                check=True,
            )
            for part in range(3)
        ]
        assert len(recorders) == 3
        answers = [
            httpx.get(f"{api.base_url}/api/metrics/slo", timeout=5).json()["objectives"]
            for api in (first, second)
        ]
    counts = [{o["name"]: (o["good"], o["total"], o["state"]) for o in a} for a in answers]
    assert counts[0] == counts[1]  # every replica answers alike
    latencies = [[150.0, 1999.0, 2000.0, 2100.0, 2600.0][i % 5] for i in range(60)]
    ttfts = [[100.0, 600.0][i % 2] for i in range(60)]
    errors = [i % 7 == 0 for i in range(60)]
    combined = sum(
        not e and lat <= 2000.0 and t <= 500.0
        for lat, t, e in zip(latencies, ttfts, errors, strict=True)
    )
    expected = {
        "q3-latency": sum(lat <= 2000.0 for lat in latencies),
        "q3-ttft": sum(t <= 500.0 for t in ttfts),
        "q3-good": combined,
        "errors": sum(not e for e in errors),
    }
    assert {name: c[:2] for name, c in counts[0].items()} == {
        name: (good, 60) for name, good in expected.items()
    }


def test_a_running_collector_takes_a_change_without_a_restart(store: StoreHarness) -> None:
    collector = store.new_collector()  # started before any objective exists
    collector.record_query("Q2", 10.0, 1, 1.0)
    collector.flush(timeout_s=30)
    assert store.read(lambda reader: reader.tiers()).tiers[0].goodCount is None
    store.read(lambda reader: reader.objectives.replace(objectives(ERRORS_ALL)))

    def judged() -> bool:  # its upkeep takes the new version within a beat or two
        collector.record_query("Q2", 10.0, 1, 1.0)
        collector.flush(timeout_s=30)
        return store.read(lambda reader: reader.tiers()).tiers[0].goodCount is not None

    wait_until(judged, 20, "the collector judging with the stored objectives")
    q2 = store.read(lambda reader: reader.tiers()).tiers[0]
    assert q2.goodCount is not None and 1 <= q2.goodCount < q2.requestCount  # history kept


def test_a_new_combined_objective_counts_only_what_is_judged(store: StoreHarness) -> None:
    for _ in range(20):  # history from before any objective: never judged
        store.collector.record_query("Q3", 10.0, 1, 1.0)
    store.collector.flush(timeout_s=30)
    store.read(lambda reader: reader.objectives.replace(objectives(COMBINED_Q3, ERRORS_ALL)))
    judging = store.new_collector()
    for _ in range(10):
        judging.record_query("Q3", 10.0, 1, 1.0)
    judging.flush(timeout_s=30)
    combined, errors = store.read(lambda reader: reader.slo()).objectives
    # The 20 unjudged queries are neither good nor bad for the combined objective: it does not
    # page on a history it never judged. The errors objective reads them from the counters.
    assert (combined.good, combined.total, combined.state) == (10, 10, "ok")
    assert (errors.good, errors.total) == (30, 30)


def test_a_replica_whose_settings_refuse_the_stored_set_answers_on(settings: Settings) -> None:
    body = {"objectives": [{**LATENCY_Q3, "tier": "Q4"}]}
    with TestClient(create_app(settings)) as wide:
        assert wide.put("/api/metrics/slo/definitions", json=body).is_success
    # A replica configured without Q4 (a rolling change): its tick and endpoints go on with
    # the last set it took (none here), and the stored set stays as it was.
    with TestClient(create_app(settings.replace(tiers=["Q2", "Q3"]))) as narrow:
        assert narrow.get("/api/metrics/slo").json()["objectives"] == []
        assert narrow.get("/api/metrics/tiers").status_code == 200
    with TestClient(create_app(settings)) as wide:
        assert [o["tier"] for o in wide.get("/api/metrics/slo").json()["objectives"]] == ["Q4"]
