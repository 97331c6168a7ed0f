"""The sampler: one per node, it writes the node's hardware snapshot to Redis every interval.

    sampler = Sampler.from_settings(get_settings())
    sampler.run(stop)          # until stop (a threading.Event) is set
    sampler.close()

Each sample reads the sources (psutil, NVML, the FAISS files, the cache Redis, the rq queues),
builds a `NodeSnapshot` and writes it through `metrics_store.live.snapshots` in one script call:
the snapshot, the node's heartbeat and the pruning of long-dead nodes, atomically, each stamp and
comparison by Redis's clock (a sampler whose clock runs hours fast prunes nobody, and drops out
within the node TTL once stopped); this node's clock stamps the sample (`sampled_at`). Nothing here
blocks to measure: CPU and I/O rates compare with the previous sample. While Redis is away the
sampler logs once, keeps sampling (so rates stay right) and writes again when Redis is back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

from metrics_store.clock import Clock, SystemClock
from metrics_store.errors import MissingSetting, StoreUnavailable
from metrics_store.live import process_health
from metrics_store.live.snapshots import NodeSnapshot, SnapshotWriter
from metrics_store.loops import LoopGuard, run_forever
from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import describe_redis, jobs_client, sync_client, topology_for
from metrics_store.settings import Settings, get_settings
from workers.gpu import GpuSource, NvmlSource
from workers.hardware import HardwareSource, PsutilSource, RateMeter
from workers.services import FaissIndexSource, JobQueueSource, NoJobQueues, RedisMemorySource
from workers.stop_signals import stop_on_signals

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
    if cache_url == settings.redis.url:  # the store's own Redis, whatever its topology
        cache = RedisMemorySource(client, topology_for(settings).used_memory)
    else:
        cache = RedisMemorySource(sync_client(settings, cache_url))
    return Sources(
        hardware=PsutilSource(),
        gpus=NvmlSource(),
        faiss_index=FaissIndexSource(settings.sampler.faiss_index_path),
        cache_memory=cache,
        jobs=_job_queues(settings),
    )


def _job_queues(settings: Settings) -> JobsSource:
    """The rq queues of the jobs Redis; none where there is no such Redis (a Cluster without
    METRICS_JOBS_REDIS_URL): the queue is an optional source, reported as empty."""
    try:
        return JobQueueSource(jobs_client(settings), settings.sampler.job_queues)
    except MissingSetting as exc:
        log.warning("no job queues to report: %s", exc)
        return NoJobQueues()


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
        self._writer = SnapshotWriter(client, settings)
        self._keys = Keys(settings.key_prefix)  # handed to process_health
        self._rates = RateMeter()
        self._redis_down = False
        self._samples = 0

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
        """Store the snapshot and the node's heartbeat; False while Redis is away."""
        try:
            self._writer.write(snapshot)
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
        """Sample every `sample_interval_s` until `stop` is set; no failure ends the loop."""
        interval_s = self._settings.sampler.interval_s
        guard = LoopGuard("sampler", base_s=min(0.5, interval_s), cap_s=5 * interval_s)
        next_due = time.monotonic()

        def step() -> float:
            nonlocal next_due
            self._step()
            now = time.monotonic()
            # A slow sample (Redis timing out) skips the ticks it missed rather than bursting.
            next_due = max(next_due + interval_s, now)
            return next_due - now

        run_forever(guard, step, stop)

    def _step(self) -> None:
        if not self.write(self.sample()):
            raise StoreUnavailable("the snapshot was not written")
        self._samples += 1
        # Its `at` is replaced by Redis's clock as it is stored (process_health.publish).
        record = process_health.current_record(self._settings.node, "sampler", self._clock.now())
        prune = self._samples % process_health.PRUNE_EVERY_BEATS == 1
        process_health.publish(self._client, self._keys, record, prune=prune)

    def close(self) -> None:
        self._sources.gpus.close()
        self._client.close()


def run_sampler(settings: Settings | None = None) -> int:
    """`metrics-store sampler`: sample until SIGTERM or SIGINT, then stop cleanly."""
    settings = settings or get_settings()
    stop = stop_on_signals()
    print(
        f"metrics-store sampler: node {settings.node}, Redis {describe_redis(settings)}, "
        f"every {settings.sampler.interval_s:g} s",
        flush=True,
    )
    sampler = Sampler.from_settings(settings)
    try:
        sampler.run(stop)
    finally:
        sampler.close()
    return 0
