"""10^6 latencies from 4 processes: every quantile within relativeError of numpy's exact ones.

The contract (docs/latency.md): quantile p lies between (1 - e) x_lo and (1 + e) x_hi, the
sorted window's values of ranks floor(p (n-1)) and ceil(p (n-1)). Merging is exact: the same
values from 1 process or 4, stamped into different buckets, give the same answer.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Sequence

import numpy as np
import pytest

from metrics_store.histogram import RELATIVE_ERROR, quantiles
from metrics_store.read.latency import parse_histogram
from metrics_store.read.reader import MetricsReader
from metrics_store.redis.bucket_cache import parse_pairs
from metrics_store.redis.read_plan import ReadPlan
from metrics_store.redis.scripts import READ, lua_script
from metrics_store.settings import Settings
from tests.conftest import T0, delete_prefix
from tests.harness import StoreHarness, make_harness
from tests.latency_data import ages_s, latencies, ttfts
from tests.processes import child_env

EVENTS = 1_000_000
PROCESSES = 4
WINDOWS_S = (300, 1800, 86_400)
TTFT_EVERY = 10
GRID = [0.5 + 0.499 * i / 50 for i in range(51)]  # p50 ... p99.9

# One child: every PROCESSES-th event from its offset, each stamped by a manual clock.
RECORD = textwrap.dedent(
    """
    import sys
    from metrics_store.clock import ManualClock
    from metrics_store.record.collector import MetricsCollector
    from metrics_store.settings import Settings
    from tests.latency_data import ages_s, latencies, ttfts

    n, offset, step, now, shift, ttft_every = (float(a) for a in sys.argv[1:7])
    n, offset, step, ttft_every = int(n), int(offset), int(step), int(ttft_every)
    values = latencies(n).tolist()
    first = ttfts(latencies(n)).tolist()
    stamps = (now - ages_s(n) + shift).tolist()
    clock = ManualClock(now)
    collector = MetricsCollector(Settings(), clock=clock)
    record = collector.record_query
    for i in range(offset, n, step):
        clock.set(stamps[i])
        ttft = first[i] if i % ttft_every == 0 else None
        record("Q2", values[i], 100, 1.0, ttft_ms=ttft)
    collector.flush(timeout_s=120)
    collector.close()
    """
)


def record(redis_url: str, prefix: str, events: int, processes: int, shift_s: float) -> None:
    """Record the data set from `processes` real processes at once.

    Every TTFT_EVERY-th query carries a TTFT too (fewer, to keep the test quick).
    """
    env = child_env(
        redis_url,
        prefix,
        METRICS_CLOCK_SKEW_TOLERANCE_S="0",
        METRICS_BUFFER_MAX_EVENTS=str(events),  # a child never waits for room nor drops
        METRICS_BATCH_MAX_EVENTS="5000",
        METRICS_NODE="accuracy",
    )
    children = []
    try:
        for k in range(processes):
            args = [str(events), str(k), str(processes), str(T0), str(shift_s), str(TTFT_EVERY)]
            children.append(subprocess.Popen([sys.executable, "-c", RECORD, *args], env=env))
        for child in children:
            assert child.wait(timeout=240) == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


@pytest.fixture
def harness(settings: Settings) -> StoreHarness:
    return make_harness("redis", settings, T0)


def window_bins(h: StoreHarness, figure: str, window_s: int) -> dict[int, int]:
    """The window's summed bins: the buckets /latency tiles it with, read and added."""
    reader = MetricsReader(None, h.settings, h.clock)  # type: ignore[arg-type]
    planner = reader._latency
    plan = ReadPlan()
    plan.fetch(planner.histogram_keys(figure, "Q2", planner.tiling(T0, window_s)))
    [reply] = lua_script(READ).run(h.client, plan.keys, plan.args)
    total: dict[bytes, float] = {}
    for i in range(0, len(reply), 2):
        for name, value in parse_pairs(reply[i], reply[i + 1]).items():
            total[name] = total.get(name, 0.0) + value
    return parse_histogram([item for pair in total.items() for item in pair])[0]


def assert_within_bound(estimates: Sequence[float], ps: Sequence[float], exact: np.ndarray) -> None:
    ordered = np.sort(exact)
    for p, estimate in zip(ps, estimates, strict=True):
        rank = p * (len(ordered) - 1)
        x_lo, x_hi = ordered[math.floor(rank)], ordered[math.ceil(rank)]
        low, high = (1 - RELATIVE_ERROR) * x_lo, (1 + RELATIVE_ERROR) * x_hi
        assert low <= estimate <= high, (p, estimate, x_lo, x_hi)


@pytest.mark.timeout(600)
def test_a_million_latencies_from_four_processes_are_within_the_bound(
    harness: StoreHarness, redis_url: str
) -> None:
    record(redis_url, harness.settings.key_prefix, EVENTS, PROCESSES, 0.0)
    values, stamps = latencies(EVENTS), T0 - ages_s(EVENTS)
    first = ttfts(values)
    carries_ttft = np.arange(EVENTS) % TTFT_EVERY == 0
    for window_s in WINDOWS_S:
        answer = harness.read(lambda r, w=window_s: r.latency(w))  # type: ignore[misc]
        assert answer.relativeError <= 0.011
        end = T0 // 10 * 10 + 10  # the end of the fine bucket holding now
        start = end - answer.window.seconds
        inside = (stamps >= start) & (stamps < end)
        [q2] = [t for t in answer.tiers if t.name == "Q2"]
        assert q2.latencyMs.count == int(inside.sum())
        assert q2.latencyMs.mean == pytest.approx(values[inside].mean(), abs=0.01)
        d = q2.latencyMs
        reported = [d.p50, d.p90, d.p95, d.p99, d.p999]
        assert_within_bound(reported, (0.5, 0.9, 0.95, 0.99, 0.999), values[inside])
        assert q2.ttftMs is not None
        ttft = first[inside & carries_ttft]
        assert q2.ttftMs.count == len(ttft)
        assert_within_bound([q2.ttftMs.p50, q2.ttftMs.p99], (0.5, 0.99), ttft)
        harness.fold()  # window_bins reads the hashes themselves: every bin in them
        grid = quantiles(window_bins(harness, "latency", window_s), GRID)
        assert_within_bound(grid, GRID, values[inside])
    harness.close()


@pytest.mark.timeout(300)
def test_merging_is_exact_across_processes_and_buckets(settings: Settings, redis_url: str) -> None:
    """One process, or four with every stamp moved by 20 s: the same 1-hour answer."""
    events = 100_000
    answers = []
    for processes, shift_s in ((1, 0.0), (PROCESSES, -20.0)):
        prefix = f"{settings.key_prefix}-{processes}"
        h = make_harness("redis", settings.replace(key_prefix=prefix), T0)
        record(redis_url, prefix, events, processes, shift_s)
        h.clock.set(T0 + shift_s)
        answers.append(h.read(lambda r: r.latency(3600)))
        delete_prefix(h.client, prefix)
        h.close()
    one, four = (a.tiers[0] for a in answers)
    assert one.latencyMs.count == four.latencyMs.count > 0
    assert one.model_dump(exclude={"latencyMs": {"mean"}, "ttftMs": {"mean"}}) == four.model_dump(
        exclude={"latencyMs": {"mean"}, "ttftMs": {"mean"}}
    )
    assert one.latencyMs.mean == pytest.approx(four.latencyMs.mean, abs=0.01)
