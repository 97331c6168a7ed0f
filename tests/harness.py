"""A collector and a reader on one store, on a real Redis or on fakeredis, under a moved clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fakeredis
import redis
import redis.asyncio as aioredis

from metrics_store.clock import ManualClock
from metrics_store.read.reader import MetricsReader
from metrics_store.record.collector import MetricsCollector
from metrics_store.record.fold import fold_waiting
from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import async_client, sync_client, topology_for
from metrics_store.settings import Settings

T = TypeVar("T")


@dataclass
class StoreHarness:
    backend: str
    settings: Settings
    clock: ManualClock
    sync_factory: Callable[[], redis.Redis]
    async_factory: Callable[[], aioredis.Redis]
    collectors: list[MetricsCollector] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = Keys(self.settings.key_prefix)
        self.client = self.sync_factory()
        self.collector = self.new_collector()

    def new_collector(self, **overrides: Any) -> MetricsCollector:
        """Another collector on the same store, e.g. as another node (node="node-b")."""
        settings = self.settings.replace(**overrides)
        collector = MetricsCollector(settings, client=self.sync_factory(), clock=self.clock)
        self.collectors.append(collector)
        return collector

    def read(self, call: Callable[[MetricsReader], Coroutine[Any, Any, T]]) -> T:
        """Run one reader call on a fresh event loop and client."""

        async def run() -> T:
            client = self.async_factory()
            try:
                return await call(MetricsReader(client, self.settings, self.clock))
            finally:
                await client.aclose()

        return asyncio.run(run())

    def fold(self) -> None:
        """Fold every shard's waiting histogram bins into their hashes (record/fold.lua), as
        the collectors' upkeep does a second after writes stop: for tests that read hashes
        themselves rather than through a reader."""
        for shard in topology_for(self.settings).shards:
            while fold_waiting(self.client, shard, min_age_ms=0).waiting:
                pass  # a fold takes the oldest entries up to its bound; the next, the rest

    def data_keys(self) -> list[str]:
        """Every key of the store except the live ones (heartbeats and the like)."""
        found = self.client.scan_iter(match=self.keys.scan_pattern, count=1000)
        return sorted(k.decode() for k in found if ":live:" not in k.decode())

    def close(self) -> None:
        for collector in self.collectors:
            collector.close()
        self.client.close()


def make_harness(backend: str, settings: Settings, start: float) -> StoreHarness:
    # The harness moves a manual clock years away from Redis's: the store is told to trust
    # its writers' clocks, as for a replay (tests/test_clocks.py covers the default).
    settings = settings.replace(clock_skew_tolerance_s=0)
    clock = ManualClock(start)
    if backend == "redis":
        return StoreHarness(
            backend,
            settings,
            clock,
            lambda: redis.Redis.from_url(settings.redis.url),
            lambda: aioredis.Redis.from_url(settings.redis.url),
        )
    if backend in ("sentinel", "cluster"):
        return StoreHarness(
            backend, settings, clock, lambda: sync_client(settings), lambda: async_client(settings)
        )
    server = fakeredis.FakeServer()
    return StoreHarness(
        backend,
        settings,
        clock,
        lambda: fakeredis.FakeRedis(server=server),
        lambda: fakeredis.FakeAsyncRedis(server=server),
    )
