"""A node's hardware snapshot, as its sampler stores it in Redis (raw units: bytes, MB/s)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from metrics_store.shapes import GpuStatus


class NodeSnapshot(BaseModel):
    """One sample of one node. Stored as JSON in the `{p}:live:snapshots` hash under its node."""

    model_config = ConfigDict(frozen=True)

    node: str
    sampled_at: float = Field(description="Epoch seconds of the sample.")
    cpu_percent: float = 0.0
    cpu_cores: int = 0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    vram_used_bytes: int = 0
    vram_total_bytes: int = 0
    gpus: list[GpuStatus] = []
    disk_read_mbps: float = 0.0
    disk_write_mbps: float = 0.0
    net_rx_mbps: float = 0.0
    net_tx_mbps: float = 0.0
    faiss_index_bytes: int = 0
    redis_used_memory_bytes: int = 0
    jobs_active: int = 0
    jobs_queued: int = 0
