"""Workers and demo traffic as real processes: every job and every simulated prompt is counted."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from rq import Queue

from metrics_store.read.reader import MetricsReader
from metrics_store.settings import Settings
from tests.harness import make_harness
from tests.processes import CliProcess, child_env
from tests.waiting import wait_until
from workers.jobs import enqueue_query, rq_connection


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return done.stdout + done.stderr


def test_worker_process_runs_queued_jobs_and_records_each(settings: Settings) -> None:
    queue_name = f"{settings.key_prefix}-jobs"
    connection = rq_connection(settings)
    queue = Queue(queue_name, connection=connection)
    for i in range(12):
        enqueue_query(queue, "explain " * i)
    env = child_env(settings.redis.url, settings.key_prefix, METRICS_DEMO_TIME_SCALE="0")
    output = run_cli(["worker", "--queues", queue_name, "--burst"], env)
    assert f"queues {queue_name}" in output
    assert len(queue) == 0

    harness = make_harness("redis", settings, 0)
    try:
        harness.clock.set(time.time())
        assert harness.read(MetricsReader.queries).totalQueries == 12
        routing = harness.read(MetricsReader.routing)
        assert routing.accuracyMetrics.totalDecisions == 12
        assert sum(a.total for a in routing.modelAvailability) == 6  # 3 + 2 + 1 models
    finally:
        harness.close()
        queue.delete(delete_jobs=True)
        connection.close()


def test_simulate_direct_records_what_it_reports(settings: Settings) -> None:
    env = child_env(settings.redis.url, settings.key_prefix)
    output = run_cli(["simulate", "--direct", "--rate", "40", "--duration", "1.5"], env)
    sent = int(re.findall(r"simulate: (\d+) queries", output)[-1])
    assert sent > 0
    harness = make_harness("redis", settings, time.time())
    try:
        assert harness.read(MetricsReader.queries).totalQueries == sent
    finally:
        harness.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_simulate_stopped_by_a_signal_flushes_and_exits_0(settings: Settings, signum: int) -> None:
    """Ctrl-C or SIGTERM ends demo traffic quietly, with every prompt it reports recorded."""
    env = child_env(settings.redis.url, settings.key_prefix)
    with CliProcess(["simulate", "--direct", "--rate", "40"], env) as simulate:
        harness = make_harness("redis", settings, time.time())
        try:

            def ten_recorded() -> bool:
                harness.clock.set(time.time())  # the reader's window ends at its clock
                return harness.read(MetricsReader.queries).totalQueries >= 10

            wait_until(ten_recorded, 30, "ten of the simulator's queries")
            assert simulate.process is not None
            simulate.process.send_signal(signum)
            assert simulate.process.wait(timeout=30) == 0, simulate.stderr_text()
            output = simulate.stdout_text() + simulate.stderr_text()
            assert "Traceback" not in output and "ERROR" not in output, output
            sent = int(re.findall(r"simulate: (\d+) queries", output)[-1])
            harness.clock.set(time.time())
            assert harness.read(MetricsReader.queries).totalQueries == sent
        finally:
            harness.close()


def test_simulate_refuses_a_bad_rate(settings: Settings) -> None:
    env = child_env(settings.redis.url, settings.key_prefix)
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "simulate", "--rate", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "metrics-store simulate: --rate must be positive"
