"""Redis Sentinel of real processes: a primary, replicas (one unless asked), three sentinels.

Every process is `redis-server` on a free loopback port in its own directory; the sentinels
are `redis-server <conf> --sentinel` (no redis-sentinel package needed). Detection and
failover are tuned short so a failover takes seconds, not the default half minute. The
tests (tests/conftest.py, tests/test_failover.py) and the failover benchmark (bench/ha.py)
start it from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from tests.waiting import wait_until
from workers.process_tree import StartedInWith
from workers.redis_process import RedisServerProcess, free_port

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
QUORUM = 2


def sentinel_command(client: redis.Redis, *args: str) -> Any:
    """One SENTINEL subcommand; redis-py types no reply of `execute_command`."""
    return client.execute_command("SENTINEL", *args)  # type: ignore[no-untyped-call]


class SentinelProcess(RedisServerProcess):
    """One sentinel: a config file of its own (sentinels rewrite it), then `--sentinel`."""

    def __init__(self, data_dir: Path, primary_port: int) -> None:
        super().__init__(data_dir)
        self.primary_port = primary_port

    def command(self) -> list[str]:
        conf = self.data_dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f'dir "{self.data_dir}"\n'
            f'logfile "{self.data_dir / "sentinel.log"}"\n'
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        return [self.binary, str(conf), "--sentinel"]


class SentinelTopology(StartedInWith):
    """Primary, replica, three sentinels under `root`; `sentinels` is what settings take.

    >>> with SentinelTopology(tmp_path) as topo:
    ...     Settings(redis_sentinels=topo.sentinels_setting)
    """

    def __init__(
        self, root: Path, *, replicas: int = 1, persist: bool = False, args: tuple[str, ...] = ()
    ) -> None:
        # More replicas, persistence and server arguments serve the fault soak (bench/soak).
        self.primary = RedisServerProcess(root / "primary", persist=persist, extra_args=args)
        follow = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replicas = [
            RedisServerProcess(
                root / ("replica" if n == 0 else f"replica-{n}"),
                persist=persist,
                extra_args=(*args, *follow),
            )
            for n in range(replicas)
        ]
        self.replica = self.replicas[0]
        self.sentinel_processes = [
            SentinelProcess(root / f"sentinel-{n}", self.primary.port) for n in range(3)
        ]

    @property
    def servers(self) -> list[RedisServerProcess]:
        """The data servers, the first primary at the start."""
        return [self.primary, *self.replicas]

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinel_processes]

    @property
    def sentinels_setting(self) -> str:
        """The value of METRICS_REDIS_SENTINELS."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinels)

    @property
    def url(self) -> str:
        """A REDIS_URL whose host and port the sentinels override (a port nobody serves)."""
        return f"redis://127.0.0.1:{free_port()}/0"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for sentinel in self.sentinel_processes:
            sentinel.start()
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until every sentinel knows the primary, a healthy replica and the other two."""
        wait_until(self._ready, timeout_s, "the sentinels to see the whole topology")

    def _ready(self) -> bool:
        for host, port in self.sentinels:
            client = redis.Redis(host=host, port=port, socket_timeout=1.0, decode_responses=True)
            try:
                replicas = sentinel_command(client, "REPLICAS", SERVICE)
                peers = sentinel_command(client, "SENTINELS", SERVICE)
                synced = [r for r in replicas if _fields(r).get("master-link-status") == "ok"]
                if not synced or len(peers) < 2:
                    return False
            finally:
                client.close()
        return True

    def primary_port(self) -> int:
        """The port the first sentinel names as primary now."""
        host, port = self.sentinels[0]
        client = redis.Redis(host=host, port=port, socket_timeout=1.0)
        try:
            _, master_port = sentinel_command(client, "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(master_port)
        finally:
            client.close()

    def wait_failover(self, old_port: int, timeout_s: float = 20.0) -> float:
        """Until every sentinel names a primary other than `old_port`; seconds it took."""

        def moved() -> bool:
            ports = []
            for host, port in self.sentinels:
                client = redis.Redis(host=host, port=port, socket_timeout=1.0)
                try:
                    reply = sentinel_command(client, "GET-MASTER-ADDR-BY-NAME", SERVICE)
                    ports.append(int(reply[1]))
                finally:
                    client.close()
            return all(port != old_port for port in ports)

        return wait_until(moved, timeout_s, "the sentinels to promote the replica")

    def stop(self) -> None:
        for process in [*self.sentinel_processes, *reversed(self.servers)]:
            process.stop()


def _fields(reply: object) -> dict[str, str]:
    """SENTINEL REPLICAS answers each replica as a flat [name, value, ...] list (RESP2)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    assert isinstance(reply, list)
    return dict(zip(reply[::2], reply[1::2], strict=True))


def role(server: RedisServerProcess) -> str:
    """ "master" or "slave", as the server itself says."""
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1.0)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()
