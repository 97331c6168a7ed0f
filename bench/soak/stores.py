"""The Redis under soak, single or Sentinel, and the faults each can be given.

Each fault returns only once it is over (the server restarted, resumed, given its memory
back), so the scheduler never overlaps two, and the soak's end finds Redis whole.
"""

from __future__ import annotations

import os
import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path

import redis

from bench.soak.proxy import ResettableProxy
from tests.sentinel_topology import SERVICE, SentinelTopology, sentinel_command
from workers.redis_process import RedisServerProcess

# Every write reaches the disk before Redis answers: a SIGKILL loses nothing acknowledged.
DURABLE_ARGS = ("--appendfsync", "always", "--maxmemory-policy", "noeviction")
PAUSE_S = 3.0
OOM_S = 5.0
# How long a SIGKILLed server stays down: past Sentinel's down-after, so that it fails over.
KILLED_FOR_S = 2.0


def admin(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_connect_timeout=1.0, socket_timeout=5.0)


def pause(port: int, seconds: float = PAUSE_S) -> str:
    """SIGSTOP the server on `port`, then SIGCONT after `seconds`."""
    client = admin(port)
    pid = int(client.info("server")["process_id"])
    client.close()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return f"pid {pid} stopped {seconds:g} s"


def starve(port: int, seconds: float = OOM_S) -> str:
    """maxmemory 1 byte for `seconds` (every write refused with OOM), then as it was."""
    client = admin(port)
    try:
        before = str(client.config_get("maxmemory")["maxmemory"])
        client.config_set("maxmemory", 1)
        time.sleep(seconds)
        client.config_set("maxmemory", before)
    finally:
        client.close()
    return f"maxmemory 1 for {seconds:g} s"


def kill_and_restart(server: RedisServerProcess, down_s: float = KILLED_FOR_S) -> str:
    """SIGKILL, `down_s` of nothing, then the same server again: same port, same AOF."""
    server.kill()
    time.sleep(down_s)
    server.start(timeout_s=60.0)  # replaying the AOF takes a while on a long soak
    return f"port {server.port} killed, back after {down_s:g} s"


class SoakStore(ABC):
    """The Redis a soak runs on: its processes, the collectors' settings, its faults."""

    kinds: tuple[str, ...] = ("kill", "pause", "oom", "reset")

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def env(self) -> dict[str, str]:
        """What a collector's environment needs to find this Redis."""

    @abstractmethod
    def primary(self) -> RedisServerProcess:
        """The server that takes writes now."""

    @abstractmethod
    def reset(self) -> str:
        """Cut the collectors' connections."""

    def inject(self, kind: str) -> str:
        """Give one fault of `kind`; what was done."""
        if kind == "kill":
            return kill_and_restart(self.primary())
        if kind == "pause":
            return pause(self.primary().port)
        if kind == "oom":
            return starve(self.primary().port)
        if kind == "reset":
            return self.reset()
        raise ValueError(f"no fault {kind!r} on this store")


class SingleStore(SoakStore):
    """One durable redis-server; the collectors reach it through a resettable proxy."""

    def __init__(self, root: Path) -> None:
        self.server = RedisServerProcess(root / "redis", persist=True, extra_args=DURABLE_ARGS)
        self.proxy = ResettableProxy(self.server.port)

    def start(self) -> None:
        self.server.start()
        self.proxy.start()

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.proxy.url}

    def primary(self) -> RedisServerProcess:
        return self.server

    def reset(self) -> str:
        return f"{self.proxy.reset()} proxied connections reset"


class SentinelStore(SoakStore):
    """A durable primary, two replicas, three sentinels.

    The sentinels hand out the servers' own addresses, so a proxy would be bypassed: a
    reset is `CLIENT KILL TYPE normal` on the primary, which cuts every client connection
    (the sentinels' own too; they reconnect).
    """

    kinds = (*SoakStore.kinds, "failover")

    def __init__(self, root: Path, acks: int) -> None:
        self.topology = SentinelTopology(root, replicas=2, persist=True, args=DURABLE_ARGS)
        self.acks = acks

    def start(self) -> None:
        self.topology.start()

    def stop(self) -> None:
        self.topology.stop()

    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.topology.url,
            "METRICS_REDIS_SENTINELS": self.topology.sentinels_setting,
            "METRICS_REDIS_MIN_REPLICAS_ACK": str(self.acks),
        }

    def primary(self) -> RedisServerProcess:
        port = self.topology.primary_port()
        return next(s for s in self.topology.servers if s.port == port)

    def reset(self) -> str:
        client = admin(self.primary().port)
        try:
            kill = ("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            killed = client.execute_command(*kill)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        return f"{killed} client connections killed"

    def inject(self, kind: str) -> str:
        if kind != "failover":
            return super().inject(kind)
        old_port = self.topology.primary_port()
        host, port = self.topology.sentinels[0]
        client = redis.Redis(host=host, port=port, socket_timeout=5.0)
        try:
            sentinel_command(client, "FAILOVER", SERVICE)
        finally:
            client.close()
        took_s = self.topology.wait_failover(old_port, timeout_s=30.0)
        return f"primary moved off port {old_port} in {took_s:.1f} s"
