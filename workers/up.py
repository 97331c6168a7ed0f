"""`metrics-store up`: the whole system in one process tree, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from metrics_store.redis.client import redacted_url
from metrics_store.redis.topology import describe_redis, topology_for
from metrics_store.settings import get_settings
from workers.process_tree import stop_process_tree
from workers.redis_process import FakeRedisServer, RedisServerProcess
from workers.stop_signals import stop_on_signals

log = logging.getLogger(__name__)

# Per child: the worker may be finishing a job, and every collector flushes before it exits.
CHILD_STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.2


@dataclass
class Children:
    """The child processes of `up`, stopped one at a time in reverse order of start."""

    env: dict[str, str]
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, *args: str) -> None:
        command = [sys.executable, "-m", "workers.cli", *args]
        # A session of its own for each child: a terminal's Ctrl-C (SIGINT to the whole
        # foreground process group at once) reaches `up` alone, and `up` decides the order.
        process = subprocess.Popen(
            command, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self.processes.append((name, process))

    def first_exited(self) -> str | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode}"
        return None

    def stop(self, timeout_s: float = CHILD_STOP_TIMEOUT_S) -> None:
        """Each child is asked to stop only once the one started after it has exited.

        So demo traffic ends before the worker that serves it, the worker (and its collector)
        before the API, and Redis, stopped by the caller, outlives every collector's flush.
        """
        while self.processes:
            name, process = self.processes.pop()
            stop_process_tree(process, timeout_s, name=name)


def start_redis(data_dir: Path) -> tuple[str, RedisServerProcess | FakeRedisServer | None]:
    """REDIS_URL, the sentinels or the cluster if set; else a private redis-server; else
    fakeredis over TCP."""
    if topology_for(get_settings()).external:
        # The sentinels name the primary (a cluster node, the others); REDIS_URL (or its
        # default) still carries the password and TLS; the children read the environment.
        return get_settings().redis.url, None
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], None
    if shutil.which("redis-server"):
        server: RedisServerProcess | FakeRedisServer = RedisServerProcess(
            data_dir / "redis", persist=True, own_session=True
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


def _child_commands(host: str, port: int, demo: str | None) -> list[tuple[str, tuple[str, ...]]]:
    """The children in order of start: each one's dependencies come before it."""
    commands = [
        ("api", ("api", "--host", host, "--port", str(port))),
        ("sampler", ("sampler",)),
        ("worker", ("worker",)),
    ]
    if demo == "otlp":  # the queries over OTLP/HTTP to the API, as an OTel-instrumented server
        api = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        commands.append(("simulate", ("simulate", "--rate", "5", "--otlp", api)))
    elif demo is not None:
        commands.append(("simulate", ("simulate", "--rate", "5")))
    return commands


def run_up(host: str, port: int, demo: str | None, data_dir: Path) -> int:
    """Start Redis (if needed), the API and the workers; stop them all on Ctrl-C or SIGTERM.

    `demo`: None, no demo traffic; "otlp", its queries over OTLP/HTTP; else through rq.

    Exit status 0 after a requested stop, 1 when a child exited by itself.
    """
    stop = stop_on_signals()
    redis_url, redis_server = start_redis(data_dir)
    children = Children(env={**os.environ, "REDIS_URL": redis_url})
    try:
        for name, args in _child_commands(host, port, demo):
            children.start(name, *args)
        _print_banner(host, port, redis_url, external=topology_for(get_settings()).external)
        if (problem := _wait(stop, children)) is not None:
            print(f"metrics-store: {problem}; stopping", file=sys.stderr)
            return 1
        print("\nmetrics-store: stopping...", flush=True)
        return 0
    finally:
        children.stop()
        if redis_server is not None:
            redis_server.stop()


def _wait(stop: threading.Event, children: Children) -> str | None:
    """Until a stop is requested (None) or a child exits by itself (what happened)."""
    while not stop.wait(POLL_INTERVAL_S):
        if (problem := children.first_exited()) is not None:
            return problem
    return None


def _print_banner(host: str, port: int, redis_url: str, *, external: bool = False) -> None:
    base = f"http://{host}:{port}"
    shown = redacted_url(redis_url)
    # A URL with a password came from REDIS_URL (private servers have none): point at the
    # variable rather than print the password.
    cli_url = '"$REDIS_URL"' if shown != redis_url else redis_url
    redis_line = (
        describe_redis(get_settings()) if external else f"{shown}   (redis-cli -u {cli_url})"
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
