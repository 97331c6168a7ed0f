"""HTTP servers under test, as child processes that are ready once they answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx

from workers.redis_process import free_port


@contextmanager
def serve(
    module_args: list[str], env: dict[str, str], probe: str, cwd: Path | None = None
) -> Iterator[str]:
    """Run `python -m <module_args> --port P` (in `cwd`); yield its base URL once `probe`
    answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", *module_args, "--port", str(port)],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + probe, timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{module_args} did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def metrics_api(redis_url: str, prefix: str) -> AbstractContextManager[str]:
    env = {"REDIS_URL": redis_url, "METRICS_KEY_PREFIX": prefix}
    return serve(["workers.cli", "api"], env, "/api/metrics/queries")


def baseline_api(redis_url: str) -> AbstractContextManager[str]:
    args = ["uvicorn", "bench.baseline_app:app", "--log-level", "warning"]
    return serve(args, {"REDIS_URL": redis_url}, "/const")


def pid_listening(base_url: str) -> int | None:
    """The pid of the process serving `base_url` (for CPU figures)."""
    import psutil

    port = int(base_url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN":
            return conn.pid
    return None
