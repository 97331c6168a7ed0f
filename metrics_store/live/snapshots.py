"""Per-node hardware snapshots: their stored format, their writer and their reader, in one place.

This module alone touches `{p}:live:snapshots` (and writes the node's beat in `{p}:live:nodes`
with it). Freshness follows Redis's clock: the write script stamps each snapshot's `stored_at`
and the node's beat with `TIME`, and a read keeps the snapshots stored within the node TTL of
`TIME`; the sampler's own `sampled_at` is shown, never compared.

The stored format is its own model in raw units (bytes, MB/s, percent, watts), apart from the
HTTP shapes of `metrics_store.read.shapes`: `metrics_store.read.resources` turns
the one into the other, so renaming an API field never changes what is in Redis, nor the reverse.

    writer = SnapshotWriter(client, settings)   # the sampler, on a sync client
    writer.write(snapshot)                      # one script call; raises redis errors
    staged = read_live_snapshots(plan, keys, ttl_s=settings.liveness.node_ttl_s)
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
    sampled_at: float = Field(description="Epoch seconds of the sample, by the node's clock.")
    stored_at: float | None = Field(
        default=None,
        description="Redis's clock when the snapshot was stored, stamped by the write script: "
        "freshness is judged by it. None only before it is written.",
    )
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

    def write(self, snapshot: NodeSnapshot) -> float:
        """Store `snapshot` as its node's latest; Redis's clock as it did (its `stored_at`).

        redis-py's errors reach the caller."""
        keys = [self._keys.snapshots, self._keys.live_nodes]
        unstamped = snapshot.model_dump_json(exclude={"stored_at"})
        args: list[str | int] = [
            snapshot.node,
            unstamped,
            self._settings.liveness.node_prune_after_s,
        ]
        _, stored_at = self._script(keys=keys, args=args)
        return float(stored_at)


def read_live_snapshots(plan: ReadPlan, keys: Keys, ttl_s: float) -> Staged[list[NodeSnapshot]]:
    """The snapshots stored within `ttl_s` of Redis's clock (TIME and one HGETALL, O(nodes))."""
    plan.time()
    plan.hgetall(keys.snapshots)

    def parse(replies: Sequence[Any]) -> list[NodeSnapshot]:
        fresh_after = float(replies[0]) - ttl_s
        snapshots = _valid_snapshots(pairs(replies[1]).values())
        # A snapshot without Redis's stamp (an older sampler's) cannot be judged: left out.
        return [s for s in snapshots if s.stored_at is not None and s.stored_at >= fresh_after]

    return Staged(2, parse)


def _valid_snapshots(raws: Iterable[bytes]) -> list[NodeSnapshot]:
    """The snapshots that parse; one malformed record must not take /resources down with it."""
    snapshots = []
    for raw in raws:
        try:
            snapshots.append(NodeSnapshot.model_validate_json(raw))
        except ValidationError as exc:
            log.warning("ignoring a malformed node snapshot: %s", exc.errors()[0]["msg"])
    return snapshots
