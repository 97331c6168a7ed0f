"""A private redis-server child on a free loopback port, or an in-process fakeredis server.

`metrics-store up` uses these when no REDIS_URL is given; the test session starts its own
private server with the same class, so nothing ever touches a Redis it was not given.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from metrics_store.redis.client import redacted_url
from workers.process_tree import StartedInWith, kill_process_tree, stop_process_tree

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_ping(url: str, timeout_s: float) -> None:
    """Block until the Redis at `url` answers PING, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                where = redacted_url(url)
                raise TimeoutError(f"Redis at {where} did not answer within {timeout_s} s")
            time.sleep(0.02)
    finally:
        client.close()


class RedisServerProcess(StartedInWith):
    """A redis-server child process with its data in `data_dir`.

    >>> with RedisServerProcess(Path("/tmp/r")) as server:
    ...     print(server.url)
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
        persist: bool = False,
        url: str | None = None,
        own_session: bool = False,
    ) -> None:
        self.data_dir = data_dir.resolve()  # redis-server chdirs into --dir before opening files
        self.port = port or free_port()
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.extra_args = extra_args
        self.persist = persist
        # The URL clients use, where extra_args ask for more than plain TCP: a password, an
        # ACL user, or TLS ("--port 0 --tls-port P" with a rediss:// URL on P).
        self._url = url
        # In a session of its own, a terminal's Ctrl-C (SIGINT to the whole foreground process
        # group) never reaches the server: its owner stops it last, after every client flushed.
        self.own_session = own_session
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self._url or f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = ["--appendonly", "yes"] if self.persist else ["--appendonly", "no"]
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            *persistence,
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, start_new_session=self.own_session
        )
        try:
            wait_for_ping(self.url, timeout_s)
        except TimeoutError:
            self.stop()
            raise

    def stop(self, timeout_s: float = 5.0) -> None:
        """A clean shutdown (SHUTDOWN when persisting, else SIGTERM); SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None:
            return
        request_stop = (lambda: self._shutdown(process)) if self.persist else None
        stop_process_tree(process, timeout_s, request_stop=request_stop, name="redis-server")

    def _shutdown(self, process: subprocess.Popen[bytes]) -> None:
        """SHUTDOWN: the AOF is written out and fsynced before the server exits.

        SIGTERM asks for the same shutdown; it stands in where the command cannot be sent.
        """
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=5.0)
        try:
            client.shutdown()  # returns once the server has closed the connection
        except (redis.RedisError, OSError) as exc:
            log.warning("SHUTDOWN failed (%s); stopping redis-server with SIGTERM", exc)
            process.terminate()
        finally:
            client.close()

    def kill(self) -> None:
        """Stop at once, as a crash would (SIGKILL)."""
        process, self._process = self._process, None
        if process is not None:
            kill_process_tree(process)
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


class FakeRedisServer:
    """fakeredis behind a real TCP port, in a thread: the last-resort embedded Redis."""

    def __init__(self, port: int | None = None) -> None:
        from fakeredis import TcpFakeServer

        self.port = port or free_port()
        self._server = TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._thread.start()
        wait_for_ping(self.url, 5.0)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
