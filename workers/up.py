"""`metrics-store up`: the whole system in one process tree, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from metrics_store.redis_client import describe_redis, redacted_url
from metrics_store.settings import get_settings
from workers.redis_process import FakeRedisServer, RedisServerProcess

log = logging.getLogger(__name__)

DATA_DIR = Path(".metrics-store")


@dataclass
class Children:
    """The child processes of `up`, stopped together and in reverse order."""

    env: dict[str, str]
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, *args: str) -> None:
        command = [sys.executable, "-m", "workers.cli", *args]
        self.processes.append((name, subprocess.Popen(command, env=self.env)))

    def first_exited(self) -> str | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode}"
        return None

    def stop(self, timeout_s: float = 5.0) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout_s
        for _, process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_redis() -> tuple[str, RedisServerProcess | FakeRedisServer | None]:
    """REDIS_URL or the sentinels if set; else a private redis-server; else fakeredis over TCP."""
    if get_settings().redis_sentinels:
        # The sentinels name the primary; REDIS_URL (or its default) still carries the
        # password, database and TLS, and the children read both from the environment.
        return get_settings().redis_url, None
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], None
    if shutil.which("redis-server"):
        server: RedisServerProcess | FakeRedisServer = RedisServerProcess(
            DATA_DIR / "redis", persist=True
        )
        server.start()
        return server.url, server
    log.warning(
        "no redis-server on PATH: using an in-process fakeredis server; data lives only as "
        "long as this process (install redis-server for a real one)"
    )
    server = FakeRedisServer()
    server.start()
    return server.url, server


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_up(host: str, port: int, demo: bool) -> int:
    """Start Redis (if needed), the API and the workers; wait for Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    redis_url, redis_server = start_redis()
    children = Children(env={**os.environ, "REDIS_URL": redis_url})
    try:
        children.start("api", "api", "--host", host, "--port", str(port))
        children.start("sampler", "sampler")
        children.start("worker", "worker")
        if demo:
            children.start("simulate", "simulate", "--rate", "5")
        _print_banner(host, port, redis_url, sentinels=bool(get_settings().redis_sentinels))
        while (problem := children.first_exited()) is None:
            time.sleep(0.2)
        print(f"metrics-store: {problem}; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmetrics-store: stopping...", flush=True)
        return 0
    finally:
        children.stop()
        if redis_server is not None:
            redis_server.stop()


def _print_banner(host: str, port: int, redis_url: str, *, sentinels: bool = False) -> None:
    base = f"http://{host}:{port}"
    shown = redacted_url(redis_url)
    # A URL with a password came from REDIS_URL (private servers have none): point at the
    # variable rather than print the password.
    cli_url = '"$REDIS_URL"' if shown != redis_url else redis_url
    redis_line = (
        describe_redis(get_settings()) if sentinels else f"{shown}   (redis-cli -u {cli_url})"
    )
    token_hint = (
        f"  token      required: open {base}/#token=<METRICS_API_TOKEN>\n"
        if os.environ.get("METRICS_API_TOKEN", "").strip()
        else ""
    )
    print(
        f"metrics-store is up\n"
        f"  dashboard  {base}/\n"
        f"  API docs   {base}/api/docs\n"
        f"{token_hint}"
        f"  Redis      {redis_line}\n"
        f"Ctrl-C stops everything.",
        flush=True,
    )
