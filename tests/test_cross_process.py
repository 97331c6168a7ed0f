"""A collector in one process and the API in another agree on every number."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.processes import ApiProcess, child_env

RECORD = textwrap.dedent(
    """
    from metrics_store import get_metrics_collector
    c = get_metrics_collector()
    for i in range(30):
        c.record_query("Q2", 100.0 + i, 20, 400.0, is_error=(i % 10 == 0))
    for i in range(10):
        c.record_query("Q4", 2000.0, 500, 1000.0)
    c.record_routing_decision("SIMPLE", "Q2", 1.25, 4.0)
    c.record_routing_decision("COMPLEX", "Q4", 8.75, 6.0, is_fallback=True)
    c.update_model_availability("Q2", 2, 3)
    c.flush(timeout_s=10)
    """
)


def test_collector_process_and_api_process_agree(redis_url: str, prefix: str) -> None:
    # A node TTL long enough that the exited collector's node is still live however long the
    # API takes to start on a loaded machine.
    env = child_env(redis_url, prefix, METRICS_NODE="worker-1", METRICS_NODE_TTL_S="120")
    subprocess.run([sys.executable, "-c", RECORD], env=env, check=True, timeout=30)
    with ApiProcess(env) as api:
        queries = api.get("/api/metrics/queries").json()
        tiers = api.get("/api/metrics/tiers").json()["tiers"]
        routing = api.get("/api/metrics/routing").json()

    assert queries["totalQueries"] == 40
    assert queries["tierDistribution"] == {"Q2": 30, "Q3": 0, "Q4": 10}
    expected_latency = (sum(100.0 + i for i in range(30)) + 10 * 2000.0) / 40
    assert queries["avgLatencyMs"] == round(expected_latency, 2)
    q2, _, q4 = tiers
    assert q2["requestCount"] == 30
    assert q2["errorRate"] == 0.1
    assert q2["latencyMs"] == [100.0 + i for i in range(10, 30)]
    assert q2["tokensPerSec"] == [50.0] * 20
    assert q4["tokensPerSec"] == [500.0] * 10
    assert routing["accuracyMetrics"] == {
        "totalDecisions": 2,
        "avgDecisionTimeMs": 5.0,
        "fallbackRate": 0.5,
    }
    # The collector process has exited: its node stops counting once its heartbeat ages out
    # (the node TTL), but until then it is live and its report is summed.
    assert routing["modelAvailability"][0] == {"tier": "Q2", "available": 2, "total": 3}
