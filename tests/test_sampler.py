"""The sampler in-process, on the real redis-server, with recorded readings and a moved clock."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from metrics_store.clock import ManualClock
from metrics_store.live.snapshots import NodeSnapshot, StoredGpu
from metrics_store.loops import PROCESS_LOOPS
from metrics_store.read.reader import MetricsReader
from metrics_store.read.shapes import ResourceMetrics
from metrics_store.redis.client import redacted_url, redis_now
from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import sync_client
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.fake_nvml import GIB, FakeGpu, FakeNvml
from tests.waiting import wait_until
from workers.gpu import GpuSource, NvmlSource
from workers.hardware import HardwareReading, RecordedSource
from workers.redis_process import RedisServerProcess, free_port
from workers.sampler import ByteCountSource, Sampler, Sources
from workers.services import JobQueueSource, RedisMemorySource

GB = 10**9


def host(at_s: float, cores: int = 4, cpu: float = 50.0, disk_read: int = 0) -> HardwareReading:
    return HardwareReading(
        monotonic_s=at_s, cpu_percent=cpu, cpu_cores=cores,
        memory_used_bytes=3 * GIB, memory_total_bytes=8 * GIB, disk_read_bytes=disk_read,
    )  # fmt: skip


class FixedBytes:
    def __init__(self, value: int) -> None:
        self.value = value

    def read(self) -> int:
        return self.value


class Harness:
    """Samplers on one store, sharing a manual clock; closed at the end of the test."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = ManualClock(T0)
        self.keys = Keys(settings.key_prefix)
        self.client = redis.Redis.from_url(settings.redis.url)
        self.samplers: list[Sampler] = []

    def sampler(
        self,
        node: str = "node-a",
        readings: list[HardwareReading] | None = None,
        gpus: GpuSource | None = None,
        faiss: int | ByteCountSource = 0,
        **overrides: object,
    ) -> Sampler:
        settings = self.settings.replace(node=node, **overrides)
        client = sync_client(settings)
        sources = Sources(
            hardware=RecordedSource(readings or [host(0.0)]),
            gpus=gpus or NvmlSource(FakeNvml()),
            faiss_index=FixedBytes(faiss) if isinstance(faiss, int) else faiss,
            cache_memory=RedisMemorySource(client),
            jobs=JobQueueSource(client, settings.sampler.job_queues),
        )
        sampler = Sampler(settings, sources, client, self.clock)
        self.samplers.append(sampler)
        return sampler

    def stored(self, node: str) -> NodeSnapshot:
        raw = self.client.hget(self.keys.snapshots, node)
        assert raw is not None, f"no snapshot of {node}"
        return NodeSnapshot.model_validate_json(raw)

    def resources(self, node: str | None = None) -> ResourceMetrics:
        async def read() -> ResourceMetrics:
            client = aioredis.Redis.from_url(self.settings.redis.url)
            try:
                return await MetricsReader(client, self.settings, self.clock).resources(node)
            finally:
                await client.aclose()

        return asyncio.run(read())

    def close(self) -> None:
        for sampler in self.samplers:
            sampler.close()
        self.client.close()


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    h = Harness(settings)
    yield h
    h.close()


def test_snapshot_holds_exact_rates_from_recorded_counters(harness: Harness) -> None:
    readings = [host(10.0, disk_read=7 * GB), host(11.0, disk_read=7 * GB + 2_500_000),
                host(13.0, disk_read=7 * GB + 3_500_000)]  # fmt: skip
    sampler = harness.sampler(readings=readings, faiss=1234)
    first = sampler.sample_once()
    harness.clock.advance(1)
    second = sampler.sample_once()
    harness.clock.advance(2)
    third = sampler.sample_once()

    assert [first.disk_read_mbps, second.disk_read_mbps, third.disk_read_mbps] == [0.0, 2.5, 0.5]
    stored = harness.stored("node-a")
    assert stored.stored_at is not None  # Redis's stamp, added as it was stored
    assert stored.model_copy(update={"stored_at": None}) == third
    assert stored.sampled_at == T0 + 3
    assert (stored.cpu_percent, stored.cpu_cores) == (50.0, 4)
    assert (stored.memory_used_bytes, stored.memory_total_bytes) == (3 * GIB, 8 * GIB)
    assert stored.faiss_index_bytes == 1234
    assert stored.redis_used_memory_bytes > 0  # the store's own Redis by default
    assert (stored.jobs_active, stored.jobs_queued) == (0, 0)


def test_one_write_stores_the_snapshot_and_heartbeat_and_nothing_else(harness: Harness) -> None:
    sampler = harness.sampler()
    for _ in range(4):
        sampler.sample_once()
        harness.clock.advance(1)
    before = redis_now(harness.client)
    sampler.sample_once()
    after = redis_now(harness.client)

    stored = harness.stored("node-a")
    assert stored.sampled_at == T0 + 4  # the sampler's clock: shown, never compared
    # The heartbeat and the freshness stamp are Redis's clock, years away from the sampler's.
    assert stored.stored_at is not None and before <= stored.stored_at <= after
    assert harness.client.zscore(harness.keys.live_nodes, "node-a") == stored.stored_at
    prune_after_s = harness.settings.liveness.node_prune_after_s
    assert 0 < harness.client.ttl(harness.keys.snapshots) <= prune_after_s
    # No write-only data: the sampler writes only keys that a reader reads (/resources reads
    # the snapshots, /routing and /health the heartbeats); no per-node history list.
    written = {k.decode() for k in harness.client.scan_iter(match=harness.keys.scan_pattern)}
    assert written == {harness.keys.snapshots, harness.keys.live_nodes}


def silence(harness: Harness, node: str, for_s: float) -> None:
    """Make `node` look silent for `for_s` seconds by Redis's clock: its stamps moved back."""
    stored = harness.stored(node)
    assert stored.stored_at is not None
    back = stored.stored_at - for_s
    moved = stored.model_copy(update={"stored_at": back}).model_dump_json()
    harness.client.hset(harness.keys.snapshots, node, moved)
    harness.client.zadd(harness.keys.live_nodes, {node: back})


def test_nodes_silent_for_long_are_pruned(harness: Harness) -> None:
    harness.sampler(node="old").sample_once()
    silence(harness, "old", harness.settings.liveness.node_prune_after_s - 60)
    harness.sampler(node="new").sample_once()
    assert harness.client.hexists(harness.keys.snapshots, "old")  # stale, not yet forgotten

    silence(harness, "old", 61)  # now silent for longer than node_prune_after_s
    harness.clock.advance(-3600)  # the writer's clock decides nothing: it may run backwards
    harness.samplers[-1].sample_once()
    assert harness.client.hkeys(harness.keys.snapshots) == [b"new"]
    assert harness.client.zrange(harness.keys.live_nodes, 0, -1) == [b"new"]


def test_resources_sum_the_live_nodes(harness: Harness) -> None:
    nvml = FakeNvml([FakeGpu("H100", used_bytes=30 * GIB, total_bytes=80 * GIB)])
    harness.sampler("node-a", [host(0.0, cores=4, cpu=10.0)], NvmlSource(nvml), 3000).sample_once()
    harness.sampler("node-b", [host(0.0, cores=12, cpu=50.0)], faiss=1000).sample_once()

    both = harness.resources()
    assert [n.node for n in both.nodes] == ["node-a", "node-b"]
    assert both.cpu.cores == 16
    assert both.cpu.percent == 40.0  # (4 * 10 + 12 * 50) / 16: weighted by cores
    assert (both.memory.used, both.memory.total, both.memory.percent) == (6.0, 16.0, 37.5)
    assert (both.vram.used, both.vram.total, both.vram.percent) == (30.0, 80.0, 37.5)
    assert both.faissIndexSize == 3000  # the largest node's: nodes hold copies of one index
    assert both.nodes[0].gpus[0].name == "H100" and both.nodes[1].gpus == []

    alone = harness.resources("node-b")
    assert [n.node for n in alone.nodes] == ["node-b"]
    assert (alone.cpu.cores, alone.faissIndexSize, alone.vram.total) == (12, 1000, 0.0)


def test_a_silent_node_drops_out_after_the_node_ttl(harness: Harness) -> None:
    a, b = harness.sampler("node-a"), harness.sampler("node-b")
    a.sample_once()
    b.sample_once()
    silence(harness, "node-b", harness.settings.liveness.node_ttl_s - 1)  # node-b has stopped
    a.sample_once()
    assert [n.node for n in harness.resources().nodes] == ["node-a", "node-b"]
    silence(harness, "node-b", 2)  # by Redis's clock, longer ago than the TTL
    a.sample_once()
    assert [n.node for n in harness.resources().nodes] == ["node-a"]


def test_redis_outage_logs_once_and_writing_resumes(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    away = Harness(settings.replace(redis_url=f"redis://127.0.0.1:{port}/0"))
    sampler = away.sampler()
    try:
        with caplog.at_level(logging.INFO, logger="workers.sampler"):
            assert [sampler.write(sampler.sample()) for _ in range(3)] == [False] * 3
            with RedisServerProcess(tmp_path / "redis", port=port):
                away.clock.advance(1)
                assert sampler.write(sampler.sample())
                assert away.stored("node-a").sampled_at == T0 + 1
                away.client.close()
        # Three failed samples, yet each part says once that Redis is away: the writer, and
        # the rq and cache readings that live on the same Redis here.
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert sorted(r.name for r in warnings) == ["workers.sampler", *["workers.services"] * 2]
        back = [r.getMessage() for r in caplog.records if r.name == "workers.sampler"][1:]
        assert back == ["Redis is back; snapshots are written again"]
    finally:
        away.close()


def test_loop_goes_on_through_nvml_errors_and_stops_on_request(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = FakeNvml([FakeGpu("L4", used_bytes=2 * GIB, total_bytes=24 * GIB)],
                    failing_readings={2, 4, 5})  # fmt: skip
    sampler = harness.sampler(gpus=NvmlSource(nvml), sample_interval_s=0.01)
    written: list[NodeSnapshot] = []
    write = sampler.write

    def recording_write(snapshot: NodeSnapshot) -> bool:
        written.append(snapshot)
        return write(snapshot)

    monkeypatch.setattr(sampler, "write", recording_write)
    stop = threading.Event()
    thread = threading.Thread(target=sampler.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: len(written) >= 6, 10)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert nvml.readings >= 6  # every tick read NVML again, failures included
    # Each failed reading was skipped: the last good one stands in, never zeros.
    assert all(s.vram_total_bytes == 24 * GIB for s in written)
    assert harness.stored("node-a").vram_total_bytes == 24 * GIB


def test_loop_survives_an_unforeseen_source_failure(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    class Flaky:
        def read(self) -> int:
            nonlocal calls
            calls += 1
            if calls in (1, 2):
                raise RuntimeError("disk gone")
            return 7

    sampler = harness.sampler(faiss=Flaky(), sample_interval_s=0.01)
    errors_before = int(PROCESS_LOOPS.snapshot().get("sampler", {}).get("errors", 0))  # type: ignore[call-overload]
    stop = threading.Event()
    thread = threading.Thread(target=sampler.run, args=(stop,))
    with caplog.at_level(logging.ERROR, logger="workers.sampler"):
        thread.start()
        try:
            wait_until(lambda: harness.client.hexists(harness.keys.snapshots, "node-a"), 10)
        finally:
            stop.set()
            thread.join(timeout=5)
    assert harness.stored("node-a").faiss_index_bytes == 7
    assert len(caplog.records) == 1  # once per streak of failures
    stats = PROCESS_LOOPS.snapshot()["sampler"]
    assert stats["errors"] == errors_before + 2  # both counted, for /health
    assert stats["last_error"] == "RuntimeError: disk gone"


def test_stored_json_is_the_stored_model_not_the_api_shape(harness: Harness) -> None:
    nvml = FakeNvml([FakeGpu("L4", used_bytes=3 * GIB, total_bytes=24 * GIB, power_mw=72_500)])
    harness.sampler(gpus=NvmlSource(nvml)).sample_once()
    raw = json.loads(harness.client.hget(harness.keys.snapshots, "node-a") or b"{}")
    assert set(raw) == set(NodeSnapshot.model_fields)
    # GPUs are stored in raw units under the stored model's names ...
    assert set(raw["gpus"][0]) == set(StoredGpu.model_fields)
    assert raw["gpus"][0]["memory_used_bytes"] == 3 * GIB
    assert raw["gpus"][0]["power_w"] == 72.5
    # ... and shown by the API in its own shape, memory in GiB.
    [gpu] = harness.resources().nodes[0].gpus
    assert (gpu.name, gpu.memoryUsed, gpu.memoryTotal, gpu.powerW) == ("L4", 3.0, 24.0, 72.5)


def test_redacted_url_hides_only_the_password() -> None:
    assert redacted_url("redis://:s3cret@db:6380/1") == "redis://:***@db:6380/1"
    assert redacted_url("rediss://app:s3cret@[::1]:6380/0") == "rediss://app:***@[::1]:6380/0"
    assert redacted_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_settings_refuse_a_sampler_slower_than_the_node_ttl() -> None:
    with pytest.raises(ValueError, match="sample_interval_s"):
        Settings(sample_interval_s=5.0, node_ttl_s=5.0)
    assert Settings(job_queues="high, default").sampler.job_queues == ["high", "default"]
    assert Settings(redis_url="redis://a/0").resolved_cache_redis_url == "redis://a/0"


def test_the_write_runs_on_fakeredis_too(settings: Settings) -> None:
    """`metrics-store up` falls back to fakeredis: the sampler's script must run there."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    sources = Sources(RecordedSource([host(0.0)]), NvmlSource(FakeNvml()), FixedBytes(0),
                      RedisMemorySource(client), JobQueueSource(client, ["default"]))  # fmt: skip
    sampler = Sampler(settings, sources, client)
    assert all(sampler.write(sampler.sample()) for _ in range(3))
    keys = Keys(settings.key_prefix)
    assert client.hkeys(keys.snapshots) == [b"node-a"]
    assert client.zrange(keys.live_nodes, 0, -1) == [b"node-a"]
    sampler.close()
