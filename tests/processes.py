"""Real processes for tests that span processes: API replicas, collectors, samplers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import IO

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.waiting import wait_until
from workers.process_tree import StartedInWith, kill_process_tree, stop_process_tree
from workers.redis_process import free_port


def child_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "METRICS_KEY_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class CliProcess(StartedInWith):
    """`metrics-store <args>` as a child process, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.args = args
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        # Files, not pipes: a chatty child must never block on a pipe nobody reads.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *self.args],
            env=self.env,
            stdout=self._stdout,
            stderr=self._stderr,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        process = self.process
        if process is None:
            return
        stop_process_tree(process, timeout_s, name=" ".join(self.args))
        self._close_pipes()

    def kill(self) -> None:
        """Stop at once, as a crash would (SIGKILL)."""
        if self.process is not None:
            kill_process_tree(self.process)
            self.process.wait()
        self._close_pipes()

    def stderr_text(self) -> str:
        """What the process has written to stderr so far."""
        return _read_all(self._stderr)

    def stdout_text(self) -> str:
        """What the process has written to stdout so far."""
        return _read_all(self._stdout)

    def _close_pipes(self) -> None:
        self._stdout.close()
        self._stderr.close()


def _read_all(file: IO[bytes]) -> str:
    if file.closed:
        return ""
    file.seek(0)
    return file.read().decode(errors="replace")


class ApiProcess(CliProcess):
    """An API replica (`metrics-store api`) on a free port, ready once it answers."""

    def __init__(self, env: Mapping[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(["api", "--host", "127.0.0.1", "--port", str(self.port)], env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/metrics/ws"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        super().start()

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Until the API answers; RuntimeError if the process exits first."""
        wait_until(
            self._answers,
            timeout_s,
            f"the API on port {self.port}",
            passing=(httpx.TransportError,),
        )

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"API exited early: {self.stderr_text()[-2000:]}")
        httpx.get(f"{self.base_url}/api/openapi.json", timeout=0.5)
        return True

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", timeout=5.0)


def start_replicas(env: Mapping[str, str], count: int) -> list[ApiProcess]:
    """`count` API replicas on one store, started side by side and all ready."""
    replicas = [ApiProcess(env) for _ in range(count)]
    try:
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_ready()
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


async def close_code(ws: ClientConnection, timeout_s: float = 10.0) -> int | None:
    """Read a WebSocket until the server closes it; the code it closed with (None: no frame)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
