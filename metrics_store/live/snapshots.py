"""Per-node hardware snapshots: their stored format, their writer and their reader, in one place.

This module alone touches `{p}:live:snapshots` (and writes the node's beat in `{p}:live:nodes`
with it). The stored format is its own model in raw units (bytes, MB/s, percent, watts), apart
from the HTTP shapes of `metrics_store.read.shapes`: `metrics_store.read.resources` turns
the one into the other, so renaming an API field never changes what is in Redis, nor the reverse.

    writer = SnapshotWriter(client, settings)   # the sampler, on a sync client
    writer.write(snapshot)                      # one script call; raises redis errors
    staged = read_live_snapshots(plan, keys, fresh_after=now_s - settings.node_ttl_s)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import ReadPlan, Staged, pairs
from metrics_store.redis.scripts import WRITE_SNAPSHOT, lua_script
from metrics_store.settings import Settings

log = logging.getLogger(__name__)


class StoredModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class StoredGpu(StoredModel):
    """One GPU as the sampler stores it (NVML's figures; None where the GPU gives none)."""

    index: int = Field(description="NVML device index.")
    name: str
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    utilization_percent: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class NodeSnapshot(StoredModel):
    """One sample of one node. Stored as JSON in the `{p}:live:snapshots` hash under its node."""

    node: str
    sampled_at: float = Field(description="Epoch seconds of the sample.")
    cpu_percent: float = 0.0
    cpu_cores: int = 0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    vram_used_bytes: int = 0
    vram_total_bytes: int = 0
    gpus: list[StoredGpu] = []
    disk_read_mbps: float = 0.0
    disk_write_mbps: float = 0.0
    net_rx_mbps: float = 0.0
    net_tx_mbps: float = 0.0
    faiss_index_bytes: int = 0
    redis_used_memory_bytes: int = 0
    jobs_active: int = 0
    jobs_queued: int = 0


class SnapshotWriter:
    """Writes this node's snapshots: the snapshot, the node's beat, and pruning, atomically."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self._script = lua_script(WRITE_SNAPSHOT).bind(client)

    def write(self, snapshot: NodeSnapshot) -> None:
        """Store `snapshot` as its node's latest; redis-py's errors reach the caller."""
        keep_s = self._settings.node_prune_after_s
        keys = [self._keys.snapshots, self._keys.live_nodes]
        prune_before = snapshot.sampled_at - keep_s  # nodes silent since then are forgotten
        args: list[str | float] = [snapshot.node, snapshot.model_dump_json(), snapshot.sampled_at]
        args += [keep_s, prune_before]
        self._script(keys=keys, args=args)


def read_live_snapshots(
    plan: ReadPlan, keys: Keys, fresh_after: float
) -> Staged[list[NodeSnapshot]]:
    """The snapshots sampled at or after `fresh_after` (one HGETALL, O(nodes))."""
    plan.hgetall(keys.snapshots)

    def parse(replies: Sequence[Any]) -> list[NodeSnapshot]:
        snapshots = _valid_snapshots(pairs(replies[0]).values())
        return [snapshot for snapshot in snapshots if snapshot.sampled_at >= fresh_after]

    return Staged(1, parse)


def _valid_snapshots(raws: Iterable[bytes]) -> list[NodeSnapshot]:
    """The snapshots that parse; one malformed record must not take /resources down with it."""
    snapshots = []
    for raw in raws:
        try:
            snapshots.append(NodeSnapshot.model_validate_json(raw))
        except ValidationError as exc:
            log.warning("ignoring a malformed node snapshot: %s", exc.errors()[0]["msg"])
    return snapshots
