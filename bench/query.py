"""Query: each REST endpoint's req/s and p50/p99 at concurrency 1 and 16, with few and with many
events recorded, against a bare FastAPI endpoint and a one-GET endpoint in the same run."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.common import Summary, Table, private_redis, progress, write_results
from bench.load import load_events, load_history, load_snapshots
from bench.servers import baseline_api, metrics_api
from bench.wrk import LoadResult, run_wrk
from metrics_store.read.latency import LatencyPlanner
from metrics_store.read.windows import parse_window
from metrics_store.redis.keys import FIGURES, Keys
from metrics_store.settings import Settings

ENDPOINTS = ("queries", "tiers", "resources", "routing", "latency")
WEEK_S = 7 * 86_400
DOCS_PLOT = Path(__file__).resolve().parent.parent / "docs" / "query-latency.png"
CONCURRENCY = (1, 16)


def measure(url: str, connections: int, duration_s: float, runs: int) -> dict[str, Summary]:
    results: list[LoadResult] = [run_wrk(url, connections, duration_s) for _ in range(runs)]
    if any(r.errors for r in results):
        raise RuntimeError(f"{url} answered errors under load")
    return {
        "rps": Summary.of([r.requests_per_s for r in results]),
        "p50_ms": Summary.of([r.p50_ms for r in results]),
        "p99_ms": Summary.of([r.p99_ms for r in results]),
    }


def measure_volume(events: int, duration_s: float, runs: int) -> dict[str, Any]:
    """All endpoints and both baselines, on one Redis holding `events` events in the window."""
    with private_redis() as server:
        settings = Settings(redis_url=server.url, key_prefix=f"b{uuid.uuid4().hex[:6]}")
        progress(f"loading {events:,} events into the 30-minute window")
        load_events(
            settings, events, span_s=settings.retention.window_s - settings.retention.bucket_s
        )
        load_snapshots(settings, nodes=4)
        figures: dict[str, Any] = {}
        with baseline_api(server.url) as base, metrics_api(server.url, settings.key_prefix) as api:
            targets = {"bare": f"{base}/const", "one GET": f"{base}/get"}
            targets |= {name: f"{api}/api/metrics/{name}" for name in ENDPOINTS}
            for name, url in targets.items():
                for connections in CONCURRENCY:
                    progress(f"{events:,} events: {name} at concurrency {connections}")
                    figures[f"{name}@{connections}"] = measure(url, connections, duration_s, runs)
    return figures


def table_for(events: int, figures: dict[str, Any]) -> Table:
    table = Table(
        f"REST with {events:,} events (median [min-max]; ratios against the one-GET endpoint)",
        ["endpoint", "req/s @16", "ratio", "p50 ms @1", "p99 ms @1", "p99 ratio"],
    )
    get16, get1 = figures["one GET@16"], figures["one GET@1"]
    for name in ("bare", "one GET", *ENDPOINTS):
        at16, at1 = figures[f"{name}@16"], figures[f"{name}@1"]
        table.add(
            name,
            at16["rps"].show(),
            f"{at16['rps'].median / get16['rps'].median:.2f}",
            at1["p50_ms"].show(2),
            at1["p99_ms"].show(2),
            f"{at1['p99_ms'].median / get1['p99_ms'].median:.2f}",
        )
    return table


def volume_table(by_volume: dict[int, dict[str, Any]]) -> Table:
    """How much slower each endpoint is with the most events than with the fewest."""
    low, high = min(by_volume), max(by_volume)
    table = Table(
        f"Volume independence: {high:,} against {low:,} events",
        ["endpoint", "p50 ms @1 ratio", "req/s @16 ratio (few/many)"],
    )
    for name in ENDPOINTS:
        few, many = by_volume[low], by_volume[high]
        p50 = many[f"{name}@1"]["p50_ms"].median / few[f"{name}@1"]["p50_ms"].median
        rps = few[f"{name}@16"]["rps"].median / many[f"{name}@16"]["rps"].median
        table.add(name, f"{p50:.2f}", f"{rps:.2f}")
    return table


def measure_windows(
    recent_rate: int, older_per_slot: int, duration_s: float, runs: int
) -> dict[str, Any]:
    """/latency over 30 minutes and over 7 days, on a week of history (bench/load.py's
    load_history): `recent_rate` queries/s over the last 35 minutes, `older_per_slot` per 10
    minutes before. With the keys and occupied bins each answer sums, read back from Redis."""
    with private_redis() as server:
        # The loader stamps a week back: the store must trust its clock (a backfill).
        settings = Settings(
            redis_url=server.url, key_prefix=f"b{uuid.uuid4().hex[:6]}", clock_skew_tolerance_s=0
        )
        progress(f"loading a week: {recent_rate}/s for 35 min, {older_per_slot} per 10 min before")
        written = load_history(settings, recent_rate, 2100, older_per_slot, WEEK_S)
        progress(f"{written:,} queries written")
        figures: dict[str, Any] = {"read": {}}
        with metrics_api(server.url, settings.key_prefix) as api:
            for window in ("30m", "7d"):
                figures["read"][window] = histogram_read_size(settings, window)
                url = f"{api}/api/metrics/latency?window={window}"
                figures[window] = measure(url, 1, duration_s, runs)["p50_ms"]
        return figures


def histogram_read_size(settings: Settings, window: str) -> dict[str, int]:
    """The hashes and occupied bins one /latency answer over `window` sums (every figure, tier)."""
    planner = LatencyPlanner(settings, Keys(settings.key_prefix))
    window_s = parse_window(window, settings.retention.bucket_s, settings.retention.history_s)
    tiling = planner.tiling(time.time(), window_s)
    names = [
        key
        for tier in settings.tiers
        for figure in FIGURES
        for key in planner.histogram_keys(figure, tier, tiling)
    ]
    client = redis.Redis.from_url(settings.redis.url)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hlen(name)
    bins = sum(pipe.execute())
    client.close()
    return {"buckets": len(tiling.buckets), "hashes": len(names), "bins": bins}


def latency_table(figures: dict[str, Any], windows: dict[str, Any]) -> Table:
    """The issue's targets: /latency against /tiers, and a 7-day window against 30 minutes."""
    table = Table("Latency reads (p50 ms at concurrency 1)", ["measure", "value", "baseline",
                  "ratio", "target"])  # fmt: skip
    latency, tiers = figures["latency@1"]["p50_ms"], figures["tiers@1"]["p50_ms"]
    table.add("/latency vs /tiers", latency.show(2), tiers.show(2),
              f"{latency.median / tiers.median:.2f}", "<= 2")  # fmt: skip
    week, half_hour = windows["7d"], windows["30m"]
    table.add("/latency 7d vs 30m", week.show(2), half_hour.show(2),
              f"{week.median / half_hour.median:.2f}", "<= 3")  # fmt: skip
    for window in ("7d", "30m"):
        read = windows["read"][window]
        table.add(f"{window}: hashes, bins summed per answer", f"{read['hashes']:,}",
                  f"{read['bins']:,}", "", "")  # fmt: skip
    return table


def run(full: bool) -> dict[str, Any]:
    volumes = (1_000, 10_000, 100_000, 1_000_000, 10_000_000) if full else (10_000, 1_000_000)
    duration_s, runs = (3.0, 3) if full else (2.0, 3)
    by_volume = {events: measure_volume(events, duration_s, runs) for events in volumes}
    for events in (min(volumes), max(volumes)):
        print(table_for(events, by_volume[events]).render())
    print(volume_table(by_volume).render())
    windows = measure_windows(1000 if full else 200, 1000 if full else 300, duration_s, runs)
    print(latency_table(by_volume[max(volumes)], windows).render())
    write_results(
        "query",
        {"volumes": {str(k): v for k, v in by_volume.items()}, "latency_windows": windows},
    )
    plot(by_volume)
    return by_volume


def plot(by_volume: dict[int, dict[str, Any]]) -> None:
    """docs/query-latency.png: p50 at concurrency 1 against recorded events."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib missing: no plot (pip install -e '.[bench]')")
        return
    volumes = sorted(by_volume)
    figure, axis = plt.subplots(figsize=(7, 4))
    for name in ("one GET", *ENDPOINTS):
        p50 = [by_volume[v][f"{name}@1"]["p50_ms"].median for v in volumes]
        axis.plot(
            volumes, p50, marker="o", label=name, linestyle="--" if name == "one GET" else "-"
        )
    axis.set_xscale("log")
    axis.set_xlabel("events recorded in the window")
    axis.set_ylabel("p50 latency at concurrency 1 (ms)")
    axis.set_ylim(bottom=0)
    axis.legend()
    axis.set_title("REST latency against recorded events")
    figure.tight_layout()
    figure.savefig(DOCS_PLOT, dpi=100)
    progress(f"plot: {DOCS_PLOT.relative_to(DOCS_PLOT.parent.parent)}")
