"""`metrics-store up`: private Redis, moving numbers, and a clean stop leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from tests.waiting import PASSING_ERRORS, wait_until
from workers.redis_process import free_port

# Until the API listens and Redis answers, a check fails with one of these: not yet.
SERVER_STARTING = (httpx.TransportError, *PASSING_ERRORS)


def test_up_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "up", "--port", str(port)],
            cwd=tmp_path,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        queries = f"{base}/api/metrics/queries"
        wait_until(
            lambda: httpx.get(queries).json()["totalQueries"] > 0,
            45,
            "demo traffic",
            passing=SERVER_STARTING,
        )
        banner = log_path.read_text()
        assert f"{base}/" in banner and f"{base}/api/docs" in banner
        redis_url = re.search(r"Redis\s+(redis://\S+)", banner)
        assert redis_url is not None
        assert ":6379/" not in redis_url.group(1)  # never the machine's shared Redis
        assert (tmp_path / ".metrics-store" / "redis").is_dir()
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 4  # redis-server, api, worker, simulate (and sampler)

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=15) == 0
        _, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
        client = redis.Redis.from_url(redis_url.group(1), socket_connect_timeout=0.5)
        try:
            client.ping()
            raise AssertionError("the private redis-server is still running")
        except redis.ConnectionError:
            pass
        finally:
            client.close()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def start_up(
    tmp_path: Path, log_path: Path, port: int, *flags: str, **extra_env: str
) -> subprocess.Popen[bytes]:
    """`metrics-store up` on `port` with its data in tmp_path/data, leading its own group."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | extra_env
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "up", "--port", str(port),
             "--data-dir", str(tmp_path / "data"), *flags],
            cwd=tmp_path,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            # A process group of its own, led by `up`, as a shell gives a foreground job: the
            # test signals that group as a terminal's Ctrl-C does.
            start_new_session=True,
        )  # fmt: skip


def total_queries(port: int) -> int:
    count: int = httpx.get(f"http://127.0.0.1:{port}/api/metrics/queries").json()["totalQueries"]
    return count


def stop_like(how: str, up: subprocess.Popen[bytes]) -> None:
    if how == "ctrl-c":
        os.killpg(up.pid, signal.SIGINT)  # the terminal signals every process of the job at once
    else:
        up.send_signal(signal.SIGTERM)  # `up` alone


def stop_and_check_output(up: subprocess.Popen[bytes], log_path: Path, how: str) -> str:
    stop_like(how, up)
    status = up.wait(timeout=60)
    output = log_path.read_text()
    assert status == 0, output[-3000:]
    assert "ERROR" not in output and "Traceback" not in output, output[-3000:]
    return output


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stop_under_demo_traffic_is_clean_and_loses_nothing(tmp_path: Path, how: str) -> None:
    """Stopped in reverse order, Redis last: every prompt sent before the stop is counted."""
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    port = free_port()
    # Demo jobs that take a good fraction of a second: the stop finds the worker in a job,
    # which it must finish and record while Redis is still up.
    up = start_up(tmp_path, first_log, port, METRICS_DEMO_TIME_SCALE="0.1")
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: total_queries(port) >= 20, 90, "demo traffic", passing=SERVER_STARTING)
        children = psutil.Process(up.pid).children(recursive=True)
        counted_before_stop = total_queries(port)
        output = stop_and_check_output(up, first_log, how)
        _, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], f"left running: {[p.cmdline() for p in alive]}"
    finally:
        kill_all(up, children)
    # simulate prints its last line once its loop has ended: no prompt is sent after it.
    sent = int(re.findall(r"simulate: (\d+) queries", output)[-1])
    assert sent >= counted_before_stop

    port = free_port()
    up = start_up(tmp_path, second_log, port, "--no-demo")
    try:
        # The stored events survived, and the jobs still queued at the stop are served now:
        # in the end every prompt sent is counted once, none lost with the stop, none twice.
        wait_until(
            lambda: total_queries(port) == sent,
            60,
            f"all {sent} prompts counted",
            passing=SERVER_STARTING,
        )
        assert total_queries(port) >= counted_before_stop
        children = psutil.Process(up.pid).children(recursive=True)
        stop_and_check_output(up, second_log, "sigterm")
    finally:
        kill_all(up, children)


def kill_all(up: subprocess.Popen[bytes], children: list[psutil.Process]) -> None:
    """After a failed test: nothing of `up` outlives it (its children lead their own groups)."""
    for process in [*children, psutil.Process(up.pid)] if up.poll() is None else children:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    up.wait()
