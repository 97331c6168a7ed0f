"""Run the benchmarks: `python -m bench [--full] [--only ingest,query,...]` (SUITES lists all)."""

from __future__ import annotations

import argparse
import importlib
import time

SUITES = (
    "ingest", "query", "live", "memory", "histogram_memory", "ha", "prometheus", "cluster",
    "revisions", "otlp", "redis_cost", "slo", "write_cost",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the full run (10 million events)")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(SUITES)}")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SUITES)
    for name in chosen:
        if name not in SUITES:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(SUITES)}")
    mode = "full" if args.full else "quick"
    for name in chosen:
        started = time.monotonic()
        print(f"\n# {name} ({mode})", flush=True)
        importlib.import_module(f"bench.{name}").run(args.full)
        print(f"  {name} took {time.monotonic() - started:.0f} s", flush=True)
    print("\nresults: bench/results/*.json")


if __name__ == "__main__":
    main()
