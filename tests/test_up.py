"""`metrics-store up`: private Redis, moving numbers, and a clean stop leaving nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import redis

from workers.redis_process import free_port


def wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if callable(condition) and condition():
                return
        except (httpx.TransportError, redis.ConnectionError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


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
        wait_for(lambda: httpx.get(queries).json()["totalQueries"] > 0, 45, "demo traffic")
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
