"""Turn stored node snapshots into the /resources shape, summed. Pure: no Redis, no clock."""

from __future__ import annotations

from collections.abc import Sequence

from metrics_store.live.snapshots import NodeSnapshot, StoredGpu
from metrics_store.read.aggregates import round2
from metrics_store.read.shapes import (
    CpuUsage,
    DiskIO,
    GpuStatus,
    NetworkThroughput,
    NodeResources,
    ResourceMetrics,
    ThreadPoolStatus,
    UsageGiB,
)
from metrics_store.timefmt import iso_utc

GIB = float(2**30)


def usage(used_bytes: int, total_bytes: int) -> UsageGiB:
    percent = used_bytes / total_bytes * 100 if total_bytes else 0.0
    return UsageGiB(
        used=round2(used_bytes / GIB), total=round2(total_bytes / GIB), percent=round2(percent)
    )


def gpu_status(gpu: StoredGpu) -> GpuStatus:
    """A stored GPU record as the API shows it (memory in GiB)."""
    return GpuStatus(
        index=gpu.index,
        name=gpu.name,
        memoryUsed=round2(gpu.memory_used_bytes / GIB),
        memoryTotal=round2(gpu.memory_total_bytes / GIB),
        utilization=gpu.utilization_percent,
        temperatureC=gpu.temperature_c,
        powerW=gpu.power_w,
    )


def cluster_wide(snapshots: Sequence[NodeSnapshot]) -> NodeSnapshot | None:
    """The freshest snapshot, by Redis's clock: the one source of the values every node
    reports alike (Redis's memory, the job queues), so that /resources and /metrics agree
    and count them once."""
    return max(snapshots, key=lambda s: s.stored_at or 0.0, default=None)


def node_resources(
    snapshot: NodeSnapshot, freshest: NodeSnapshot, connections: int
) -> NodeResources:
    return NodeResources(
        node=snapshot.node,
        sampledAt=iso_utc(snapshot.sampled_at),
        vram=usage(snapshot.vram_used_bytes, snapshot.vram_total_bytes),
        cpu=CpuUsage(percent=round2(snapshot.cpu_percent), cores=snapshot.cpu_cores),
        memory=usage(snapshot.memory_used_bytes, snapshot.memory_total_bytes),
        faissIndexSize=snapshot.faiss_index_bytes,
        redisCacheSize=freshest.redis_used_memory_bytes,
        activeConnections=connections,
        threadPoolStatus=ThreadPoolStatus(active=freshest.jobs_active, queued=freshest.jobs_queued),
        diskIO=DiskIO(
            readMBps=round2(snapshot.disk_read_mbps), writeMBps=round2(snapshot.disk_write_mbps)
        ),
        networkThroughput=NetworkThroughput(
            rxMBps=round2(snapshot.net_rx_mbps), txMBps=round2(snapshot.net_tx_mbps)
        ),
        gpus=[gpu_status(gpu) for gpu in snapshot.gpus],
    )


def resource_metrics(snapshots: Sequence[NodeSnapshot], connections: int) -> ResourceMetrics:
    """The cluster view: sums over nodes, cluster-wide values counted once, nodes by name."""
    ordered = sorted(snapshots, key=lambda s: s.node)
    freshest = cluster_wide(ordered)
    nodes = [node_resources(s, freshest, connections) for s in ordered] if freshest else []
    cores = sum(s.cpu_cores for s in ordered)
    busy = sum(s.cpu_percent * s.cpu_cores for s in ordered)
    return ResourceMetrics(
        vram=usage(
            sum(s.vram_used_bytes for s in ordered), sum(s.vram_total_bytes for s in ordered)
        ),
        cpu=CpuUsage(percent=round2(busy / cores) if cores else 0.0, cores=cores),
        memory=usage(
            sum(s.memory_used_bytes for s in ordered), sum(s.memory_total_bytes for s in ordered)
        ),
        faissIndexSize=max((s.faiss_index_bytes for s in ordered), default=0),
        redisCacheSize=freshest.redis_used_memory_bytes if freshest else 0,
        activeConnections=connections,
        threadPoolStatus=ThreadPoolStatus(
            active=freshest.jobs_active if freshest else 0,
            queued=freshest.jobs_queued if freshest else 0,
        ),
        diskIO=DiskIO(
            readMBps=round2(sum(s.disk_read_mbps for s in ordered)),
            writeMBps=round2(sum(s.disk_write_mbps for s in ordered)),
        ),
        networkThroughput=NetworkThroughput(
            rxMBps=round2(sum(s.net_rx_mbps for s in ordered)),
            txMBps=round2(sum(s.net_tx_mbps for s in ordered)),
        ),
        nodes=nodes,
    )
