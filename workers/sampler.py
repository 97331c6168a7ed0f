"""The sampler: one per node, it writes the node's hardware snapshot to Redis every interval.

    sampler = Sampler.from_settings(get_settings())
    sampler.run(stop)          # until stop (a threading.Event) is set
    sampler.close()

Each sample reads the sources (psutil, NVML, the FAISS files, the cache Redis, the rq queues),
builds a `NodeSnapshot` and writes it with one script call: the snapshot, a capped history
entry, the node's heartbeat and the pruning of long-dead nodes, atomically. Nothing here
blocks to measure: CPU and I/O rates compare with the previous sample. While Redis is away the
sampler logs once, keeps sampling (so rates stay right) and writes again when Redis is back.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

import redis

from metrics_store.clock import Clock, SystemClock
from metrics_store.keys import Keys
from metrics_store.redis_client import describe_redis, sync_client
from metrics_store.scripts import WRITE_SNAPSHOT, lua_source
from metrics_store.settings import Settings, get_settings
from metrics_store.snapshots import NodeSnapshot
from workers.gpu import GpuSource, NvmlSource
from workers.hardware import HardwareSource, PsutilSource, RateMeter
from workers.services import FaissIndexSource, JobQueueSource, RedisMemorySource

log = logging.getLogger(__name__)


class ByteCountSource(Protocol):
    def read(self) -> int: ...


class JobsSource(Protocol):
    def read(self, now_s: float) -> tuple[int, int]:
        """(active, queued)."""
        ...


@dataclass
class Sources:
    """Everything a snapshot is read from; tests hand in recorded or fake ones."""

    hardware: HardwareSource
    gpus: GpuSource
    faiss_index: ByteCountSource
    cache_memory: ByteCountSource
    jobs: JobsSource


def default_sources(settings: Settings, client: redis.Redis) -> Sources:
    """The real machine: psutil, pynvml, the configured index files, cache Redis and queues."""
    cache_url = settings.resolved_cache_redis_url
    cache_client = client if cache_url == settings.redis_url else sync_client(settings, cache_url)
    return Sources(
        hardware=PsutilSource(),
        gpus=NvmlSource(),
        faiss_index=FaissIndexSource(settings.faiss_index_path),
        cache_memory=RedisMemorySource(cache_client),
        jobs=JobQueueSource(client, settings.job_queues),
    )


class Sampler:
    """Samples this node (`settings.node`) and writes its snapshot into Redis."""

    def __init__(
        self,
        settings: Settings,
        sources: Sources,
        client: redis.Redis,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._sources = sources
        self._client = client
        self._clock = clock or SystemClock()
        self._keys = Keys(settings.key_prefix)
        self._write_script = client.register_script(lua_source(WRITE_SNAPSHOT))
        self._rates = RateMeter()
        self._redis_down = False
        self._failing_samples = 0

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> Sampler:
        client = sync_client(settings)
        return cls(settings, default_sources(settings, client), client, clock)

    # --- one sample -------------------------------------------------------------------------
    def sample(self) -> NodeSnapshot:
        """Read every source now; no Redis write."""
        now_s = self._clock.now()
        host = self._sources.hardware.read()
        rates = self._rates.update(host)
        gpus = self._sources.gpus.read()
        active, queued = self._sources.jobs.read(now_s)
        return NodeSnapshot(
            node=self._settings.node,
            sampled_at=now_s,
            cpu_percent=host.cpu_percent,
            cpu_cores=host.cpu_cores,
            memory_used_bytes=host.memory_used_bytes,
            memory_total_bytes=host.memory_total_bytes,
            vram_used_bytes=gpus.vram_used_bytes,
            vram_total_bytes=gpus.vram_total_bytes,
            gpus=list(gpus.gpus),
            disk_read_mbps=rates.disk_read_mbps,
            disk_write_mbps=rates.disk_write_mbps,
            net_rx_mbps=rates.net_rx_mbps,
            net_tx_mbps=rates.net_tx_mbps,
            faiss_index_bytes=self._sources.faiss_index.read(),
            redis_used_memory_bytes=self._sources.cache_memory.read(),
            jobs_active=active,
            jobs_queued=queued,
        )

    def write(self, snapshot: NodeSnapshot) -> bool:
        """Store the snapshot, its history entry and the heartbeat; False while Redis is away."""
        s = self._settings
        keys = [self._keys.snapshots, self._keys.snapshot_history(s.node), self._keys.live_nodes]
        prune_before = snapshot.sampled_at - s.node_prune_after_s
        args: list[str | float] = [s.node, snapshot.model_dump_json(), snapshot.sampled_at]
        args += [s.snapshot_history_len, s.node_prune_after_s, prune_before]
        try:
            self._write_script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            if not self._redis_down:
                log.warning("Redis unavailable (%s); sampling on, writing when it is back", exc)
            self._redis_down = True
            return False
        if self._redis_down:
            log.info("Redis is back; snapshots are written again")
        self._redis_down = False
        return True

    def sample_once(self) -> NodeSnapshot:
        """Sample and write; the snapshot is returned whether or not Redis took it."""
        snapshot = self.sample()
        self.write(snapshot)
        return snapshot

    # --- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Sample every `sample_interval_s` until `stop` is set."""
        interval_s = self._settings.sample_interval_s
        next_due = time.monotonic()
        while not stop.is_set():
            self._step()
            now = time.monotonic()
            # A slow sample (Redis timing out) skips the ticks it missed rather than bursting.
            next_due = max(next_due + interval_s, now)
            stop.wait(next_due - now)

    def _step(self) -> None:
        # The loop must outlive any one sample: a source failing in a way nobody foresaw is
        # logged (once per run of failures) and the next tick tries again.
        try:
            self.sample_once()
        except Exception:
            self._failing_samples += 1
            if self._failing_samples == 1:
                log.exception("sample failed; the sampler goes on")
            return
        self._failing_samples = 0

    def close(self) -> None:
        self._sources.gpus.close()
        self._client.close()


def run_sampler(settings: Settings | None = None) -> int:
    """`metrics-store sampler`: sample until SIGTERM or SIGINT, then stop cleanly."""
    settings = settings or get_settings()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(
        f"metrics-store sampler: node {settings.node}, Redis {describe_redis(settings)}, "
        f"every {settings.sample_interval_s:g} s",
        flush=True,
    )
    sampler = Sampler.from_settings(settings)
    try:
        sampler.run(stop)
    finally:
        sampler.close()
    return 0
