"""Each process's loop health in Redis: what its loops have failed, for `/api/metrics/health`.

A process publishes `PROCESS_LOOPS` (metrics_store/loops.py) into the `{p}:live:processes` hash
with the heartbeat it already sends (the collector's flusher, the API replica's beat, the
sampler), so a loop that keeps failing shows through the API, not only in that process's log.
Fields of processes silent for `FORGET_AFTER_S` are deleted by whichever process publishes next.
A record's `at` is Redis's clock as it was stored (stamp_record.lua), whatever the publisher's
own clock says: liveness and pruning compare only Redis's stamps.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import orjson
import redis
import redis.asyncio as aioredis

from metrics_store.loops import PROCESS_LOOPS, LoopRegistry, process_id
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import STAMP_RECORD, lua_script

log = logging.getLogger(__name__)

FORGET_AFTER_S = 3600.0


@dataclass(frozen=True)
class StoredLoop:
    """One loop's failures, as stored."""

    errors: int
    streak: int
    last_error: str | None
    last_error_at: float | None


@dataclass(frozen=True)
class StoredProcess:
    """One process's record in `{p}:live:processes`."""

    process: str
    node: str
    roles: list[str]  # what runs in it: collector, api, sampler (one process may run several)
    at: float  # stored: Redis's clock as it was written (the publisher's is replaced)
    loops: dict[str, StoredLoop] = field(default_factory=dict)

    def unstamped_json(self) -> bytes:
        """The record without `at`, which the script stamps by Redis's clock."""
        return orjson.dumps({k: v for k, v in asdict(self).items() if k != "at"})

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoredProcess | None:
        """The record in `raw`, or None if it is not one (logged, not raised)."""
        try:
            data = orjson.loads(raw)
            loops = {name: StoredLoop(**stats) for name, stats in data["loops"].items()}
            roles = [str(role) for role in data["roles"]]
            return cls(data["process"], data["node"], roles, float(data["at"]), loops)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring a malformed process record: %s", exc)
            return None


def current_record(
    node: str, role: str, at: float, registry: LoopRegistry = PROCESS_LOOPS
) -> StoredProcess:
    """This process's record, as the publisher of `role` sees it (with every other role's)."""
    registry.add_role(role)
    loops = {name: StoredLoop(**stats) for name, stats in registry.snapshot().items()}  # type: ignore[arg-type]
    return StoredProcess(process_id(node), node, registry.roles(), at, loops)


def publish(client: redis.Redis, keys: Keys, record: StoredProcess, *, prune: bool) -> float:
    """Write this process's record, stamped by Redis's clock; with `prune`, also forget the
    long-silent ones. Returns Redis's clock (the stamp)."""
    args: list[str | bytes] = [record.process, record.unstamped_json()]
    now_s = float(lua_script(STAMP_RECORD).run(client, [keys.processes], args))
    if prune and (stale := _silent_fields(client.hgetall(keys.processes), now_s)):
        client.hdel(keys.processes, *stale)
    return now_s


async def publish_async(
    client: aioredis.Redis, keys: Keys, record: StoredProcess, *, prune: bool
) -> float:
    """publish() for the API's event loop."""
    args: list[str | bytes] = [record.process, record.unstamped_json()]
    now_s = float(await lua_script(STAMP_RECORD).run_async(client, [keys.processes], args))
    if prune and (stale := _silent_fields(await client.hgetall(keys.processes), now_s)):
        await client.hdel(keys.processes, *stale)
    return now_s


# Publishers prune once in this many beats: the scan is O(processes), the beat O(1).
PRUNE_EVERY_BEATS = 600


def _silent_fields(records: dict[bytes | str, bytes | str], now_s: float) -> list[bytes | str]:
    """The fields silent for FORGET_AFTER_S before `now_s` (Redis's clock), or unreadable."""
    stale: list[bytes | str] = []
    for name, raw in records.items():
        parsed = StoredProcess.from_json(raw)
        if parsed is None or parsed.at < now_s - FORGET_AFTER_S:
            stale.append(name)
    return stale
