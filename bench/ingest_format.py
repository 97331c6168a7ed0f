"""The ingest call's format, before and after, in one run: the base commit's encoder and script
(19 positional ARGV values) against this tree's (one JSON document), same events, same Redis.

    python -m bench.ingest_format [--full] [--base REV]

The base commit's `metrics_store/` is unpacked into a temporary directory (`git archive`; the
repository is not touched) and each side runs bench/ingest_probe.py in a child process with
its own tree on PYTHONPATH, the two interleaved run by run so that a shared machine's drift
falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Summary, Table, private_redis, progress, tree_at, write_results

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "ingest_probe.py"
# The last commit whose ingest call was 19 positional ARGV values.
BASE = "b0b4992"
BATCH_EVENTS = 1000  # the collector's default batch (METRICS_BATCH_MAX_EVENTS)


def probe(tree: Path, url: str, events: int) -> dict[str, Any]:
    """One measurement of `tree`'s ingest call (bench/ingest_probe.py), in a child process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(PROBE), url, str(events), str(BATCH_EVENTS)],
        env=env, cwd=tree, check=True, capture_output=True, text=True,
    )  # fmt: skip
    measured: dict[str, Any] = json.loads(done.stdout)
    if not measured["tree"].startswith(str(tree)):
        raise RuntimeError(f"measured {measured['tree']}, not the tree under {tree}")
    return measured


def measure(events: int, runs: int, revision: str) -> dict[str, list[dict[str, Any]]]:
    """`runs` measurements of each side, interleaved, on one private Redis."""
    sides: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tree_at(revision, "metrics_store") as old, private_redis() as server:
        for run in range(runs):
            progress(f"run {run + 1} of {runs}: {revision} then this tree, {events:,} events")
            sides["before"].append(probe(old, server.url, events))
            sides["after"].append(probe(ROOT, server.url, events))
    return sides


# label -> (figure of one run, digits shown). Wall-clock rates move with whatever else the
# machine runs; CPU per event (this process's, Redis's) much less so.
MEASURES: dict[str, tuple[Callable[[dict[str, Any]], float], int]] = {
    "encode: CPU per event (us)": (lambda r: _per_event_us(r, "encode_cpu_s"), 2),
    "script calls, pre-encoded: client CPU per event (us)": (
        lambda r: _per_event_us(r, "call_cpu_s"),
        2,
    ),
    "script calls, pre-encoded: Redis CPU per event (us)": (
        lambda r: _per_event_us(r, "call_redis_cpu_s"),
        2,
    ),
    "script calls, pre-encoded (events/s)": (lambda r: r["events"] / r["call_s"], 0),
    "collector, record to flush() (events/s)": (lambda r: r["events"] / r["collector_s"], 0),
    "collector: process CPU per event (us)": (lambda r: _per_event_us(r, "collector_cpu_s"), 2),
    "collector: Redis CPU per event (us)": (
        lambda r: _per_event_us(r, "collector_redis_cpu_s"),
        2,
    ),
}


def _per_event_us(run: dict[str, Any], seconds: str) -> float:
    return float(run[seconds]) / int(run["events"]) * 1e6


def summarise(sides: dict[str, list[dict[str, Any]]]) -> tuple[Table, dict[str, Any]]:
    """The table (median [min-max] of each side, ratio after / before) and its JSON form."""
    table = Table(
        "Ingest call: before (19 positional ARGV values) vs after (a named, versioned header)",
        ["measure", "before", "after", "after / before"],
    )
    results: dict[str, Any] = {}
    for label, (figure, digits) in MEASURES.items():
        before = Summary.of([figure(run) for run in sides["before"]])
        after = Summary.of([figure(run) for run in sides["after"]])
        ratio = after.median / before.median
        table.add(label, before.show(digits), after.show(digits), f"{ratio:.3f}")
        results[label] = {"before": before, "after": after, "ratio": ratio}
    return table, results


def run(full: bool, revision: str = BASE) -> dict[str, Any]:
    events, runs = (400_000, 5) if full else (100_000, 3)
    table, results = summarise(measure(events, runs, revision))
    print(table.render())
    results["table"] = table.rows
    results["base"] = revision
    write_results("ingest_format", results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.ingest_format", description=__doc__)
    parser.add_argument("--full", action="store_true", help="400,000 events x 5 runs")
    parser.add_argument("--base", default=BASE, help=f"the revision before (default {BASE})")
    args = parser.parse_args()
    run(args.full, args.base)


if __name__ == "__main__":
    main()
