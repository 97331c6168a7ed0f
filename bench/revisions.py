"""Revisions: this tree against an earlier commit, in one run, on one Redis.

A restructuring must not cost speed. The earlier commit's packages are unpacked into a
temporary directory (`git archive`); each side then runs as its own child processes (its
code on `PYTHONPATH`, its tree the working directory), taking turns, so both meet the same
machine at the same moments:

- ingest: one collector process records queries with TTFT and queue time and flushes; its
  events/s counts only events the collector reports written;
- REST: one API process per side answers every endpoint under wrk at concurrency 16, on the
  same store.

    python -m bench.revisions --base 09fc966      # or: python -m bench --only revisions
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import Summary, Table, private_redis, progress, tree_at, write_results
from bench.load import load_events, load_snapshots
from bench.servers import serve
from bench.wrk import run_wrk
from metrics_store.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The last commit before metrics_store was split into rooms (record/, read/, live/, redis/).
DEFAULT_BASE = "09fc966"
ENDPOINTS = ("queries", "tiers", "resources", "routing", "latency")

INGEST = """
import sys, time
from metrics_store import get_metrics_collector
count = int(sys.argv[1])
collector = get_metrics_collector()
collector.flush(timeout_s=30)
started = time.perf_counter()
for i in range(count):
    collector.record_query("Q2", 100.0 + i % 900, 64, 50.0, ttft_ms=20.0 + i % 50,
                           queue_time_ms=3.0 + i % 7)
collector.flush(timeout_s=600)
elapsed = time.perf_counter() - started
print(collector.written_events / elapsed if collector.written_events == count else 0.0)
"""


def side_env(tree: Path, redis_url: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(tree),
        "REDIS_URL": redis_url,
        "METRICS_KEY_PREFIX": prefix,
        # Every event recorded is kept: the caller waits for room instead of dropping.
        "METRICS_BUFFER_FULL_POLICY": "block",
    }


def ingest_rate(tree: Path, redis_url: str, count: int) -> float:
    env = side_env(tree, redis_url, f"i{uuid.uuid4().hex[:6]}")
    done = subprocess.run(
        [sys.executable, "-c", INGEST, str(count)],
        cwd=tree, env=env, capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    rate = float(done.stdout.strip().splitlines()[-1])
    if rate == 0.0:
        raise RuntimeError(f"{tree}: not every event was written")
    return rate


def measure(trees: dict[str, Path], events: int, ingest_events: int, runs: int) -> dict[str, Any]:
    figures: dict[str, dict[str, list[float]]] = {side: {} for side in trees}
    answers: dict[str, tuple[int, int, int]] = {}
    with private_redis() as server:
        for run in range(runs):
            for side, tree in trees.items():
                progress(f"run {run + 1}/{runs}: {side} ingests {ingest_events:,} events")
                rate = ingest_rate(tree, server.url, ingest_events)
                figures[side].setdefault("ingest", []).append(rate)
        settings = Settings(redis_url=server.url, key_prefix=f"r{uuid.uuid4().hex[:6]}")
        progress(f"loading {events:,} events into the 30-minute window")
        load_events(
            settings, events, span_s=settings.retention.window_s - settings.retention.bucket_s
        )
        load_snapshots(settings, nodes=4)
        for run in range(runs):
            for side, tree in trees.items():
                env = side_env(tree, server.url, settings.key_prefix)
                args = ["workers.cli", "api"]
                with serve(args, env, "/api/metrics/queries", cwd=tree) as api:
                    answers.setdefault(side, what_is_read(api))
                    for name in ENDPOINTS:
                        progress(f"run {run + 1}/{runs}: {side} /{name} at concurrency 16")
                        result = run_wrk(f"{api}/api/metrics/{name}", 16, 3.0)
                        if result.errors:
                            raise RuntimeError(f"{side} /{name} answered errors")
                        figures[side].setdefault(name, []).append(result.requests_per_s)
    (base_queries, base_nodes, _), (queries, nodes, _) = answers.values()
    # The window slides between the two sides' first reads: its oldest bucket may leave it.
    if nodes != base_nodes or abs(queries - base_queries) > 0.02 * max(queries, base_queries):
        raise RuntimeError(f"the two sides read different stores: {answers}")
    return {side: {k: Summary.of(v) for k, v in per.items()} for side, per in figures.items()}


def what_is_read(api: str) -> tuple[int, int, int]:
    """Each side must answer from the same data, or the comparison measures nothing: the
    queries in the window, the live nodes, the routing decisions."""
    queries = httpx.get(f"{api}/api/metrics/queries").json()["totalQueries"]
    nodes = len(httpx.get(f"{api}/api/metrics/resources").json()["nodes"])
    routing = httpx.get(f"{api}/api/metrics/routing").json()["accuracyMetrics"]["totalDecisions"]
    return queries, nodes, routing


def table(base: str, figures: dict[str, Any]) -> Table:
    out = Table(
        f"This tree against {base}, same run (median [min-max]; ratio this/base)",
        ["figure", "base", "this tree", "ratio"],
    )
    for name in ("ingest", *ENDPOINTS):
        old, new = figures["base"][name], figures["this tree"][name]
        label = "ingest events/s" if name == "ingest" else f"/{name} req/s @16"
        out.add(label, old.show(), new.show(), f"{new.median / old.median:.2f}")
    return out


def run(full: bool, base: str = DEFAULT_BASE) -> None:
    events, ingest_events, runs = (1_000_000, 500_000, 5) if full else (10_000, 100_000, 3)
    with tree_at(base, "metrics_store", "api", "workers") as base_tree:
        figures = measure({"base": base_tree, "this tree": ROOT}, events, ingest_events, runs)
    result = table(base, figures)
    print(result.render())
    write_results("revisions", {"base": base, "figures": figures, "table": result.rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench.revisions", description=__doc__)
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"commit (default {DEFAULT_BASE})")
    parser.add_argument("--full", action="store_true")
    options = parser.parse_args()
    run(options.full, options.base)
