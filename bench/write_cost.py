"""Writes (issue 20): one collector's stored events/s against the pre-histogram batched Lua.

The baseline is `raw_lua_rate` of the last commit before the latency histograms (BASE): its
encoder and ingest script, batches of 1,000 pre-encoded, Redis alone setting the pace, writing
the counters and streams but no bin. Against it, in the same run and on the same redis-server,
taking turns: this tree's collector in one process recording queries with TTFT and queue time
(so four histograms per query), counted as stored (read back through the reader), and four
such processes together. Each side runs in a child process with its own tree on PYTHONPATH.

    python -m bench.write_cost [--full]      # or: python -m bench --only write_cost
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.common import Summary, Table, private_redis, progress, tree_at, write_results
from bench.ingest import _events, parallel_collectors
from metrics_store.record.batch import BatchEncoder
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The last commit before the latency histograms: its ingest wrote counters and streams only.
BASE = "53780a5"
RAW_LUA = "import sys; from bench.ingest import raw_lua_rate as r; print(r(sys.argv[1], {n}, 1000))"
ONE = "import sys; from bench.ingest import collector_rate as r; print(r(sys.argv[1], {n}))"


def _child(tree: Path, code: str, url: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code, url], env=env, cwd=tree, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def call_durations(url: str, batches: int = 400) -> dict[str, float]:
    """This tree's ingest calls, pre-encoded batches of 1,000 queries sent one after another:
    how long each holds Redis's thread (ms, by INFO commandstats' EVALSHA total per call, and
    the longest by SLOWLOG: one that folded)."""
    settings = Settings(redis_url=url, key_prefix=f"hold{uuid.uuid4().hex[:8]}", node="bench")
    encoder = BatchEncoder(settings, Keys(settings.key_prefix))
    now = time.time()
    stream = _events(batches * 1000, now)
    encoded = [
        encoder.encode(list(stream[i : i + 1000]), uuid.uuid4().hex, now)
        for i in range(0, len(stream), 1000)
    ]
    client = redis.Redis.from_url(url)
    script = lua_script(INGEST)
    script.run(client, encoded[0].keys, encoded[0].args)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    client.config_resetstat()
    slowest = 0.0
    for batch in encoded[1:]:
        script.run(client, batch.keys, batch.args)
        for entry in client.slowlog_get(16):
            if entry["command"].startswith(b"EVALSHA"):
                slowest = max(slowest, entry["duration"] / 1000)
        client.slowlog_reset()
    stats = client.info("commandstats")["cmdstat_evalsha"]
    client.config_set("slowlog-log-slower-than", 10_000)
    client.close()
    return {"mean_ms": stats["usec_per_call"] / 1000, "max_ms": slowest}


def _redis_cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def _measured(client: redis.Redis, events: int, run: Any) -> tuple[float, float]:
    """events/s of `run()`, and Redis's main-thread CPU per 1,000 events (ms)."""
    before = _redis_cpu_s(client)
    rate = run()
    return rate, (_redis_cpu_s(client) - before) / events * 1e6


def run(full: bool) -> dict[str, Any]:
    events = 200_000 if full else 60_000
    rounds = 5 if full else 3
    base_rates, one_rates, four_rates = [], [], []
    base_cpu, one_cpu, four_cpu = [], [], []
    with tree_at(BASE, "metrics_store", "bench") as base, private_redis() as server:
        client = redis.Redis.from_url(server.url)
        for r in range(rounds):
            progress(f"round {r + 1}/{rounds}: {BASE} raw Lua, one collector, four collectors")
            rate, cpu = _measured(
                client, events, lambda: _child(base, RAW_LUA.format(n=events), server.url)
            )
            base_rates.append(rate)
            base_cpu.append(cpu)
            rate, cpu = _measured(
                client, events, lambda: _child(ROOT, ONE.format(n=events), server.url)
            )
            one_rates.append(rate)
            one_cpu.append(cpu)
            rate, cpu = _measured(
                client, 4 * events, lambda: parallel_collectors(server.url, 4, events)[0]
            )
            four_rates.append(rate)
            four_cpu.append(cpu)
            client.flushall()
        progress("how long one ingest call holds Redis, 400 batches of 1,000")
        hold = call_durations(server.url)
        client.close()
    raw, one, four = Summary.of(base_rates), Summary.of(one_rates), Summary.of(four_rates)
    table = Table(
        f"Writes against {BASE}'s raw Lua (events/s; median [min-max]; {events:,} events/run)",
        ["measure", "value", "baseline", "ratio", "target"],
    )
    table.add(f"{BASE} raw batched Lua (no bins)", raw.show(), "", "", "")
    table.add("collector, 1 process (TTFT, queue)", one.show(), raw.show(),
              f"{one.median / raw.median:.2f}", ">= 0.7")  # fmt: skip
    table.add("collectors, 4 processes", four.show(), one.show(),
              f"{four.median / one.median:.2f}", ">= 1.0")  # fmt: skip
    cpu = Table("Redis main-thread CPU per 1,000 events stored (ms)", ["side", "value"])
    cpu.add(f"{BASE} raw batched Lua", Summary.of(base_cpu).show())
    cpu.add("collector, 1 process", Summary.of(one_cpu).show())
    cpu.add("collectors, 4 processes", Summary.of(four_cpu).show())
    held = Table("One ingest call of 1,000 queries (ms of Redis's thread)", ["measure", "value"])
    held.add("mean per call (folds included)", f"{hold['mean_ms']:.2f}")
    held.add("longest call (a fold of 32 batches)", f"{hold['max_ms']:.2f}")
    print(table.render())
    print(cpu.render())
    print(held.render())
    results = {"raw_lua": raw, "collector_1": one, "collector_4": four, "table": table.rows,
               "redis_cpu_ms_per_1000": cpu.rows, "call_ms": hold}  # fmt: skip
    write_results("write_cost", results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    run(parser.parse_args().full)


if __name__ == "__main__":
    main()
