"""What each collector reports about itself: events written, dropped and waiting.

Every collector's flusher writes its counters into the `{p}:live:collectors` hash with its
heartbeat, so events dropped during an outage are visible through the API
(`/api/metrics/health`) once Redis is back, not only in that process's log. The record's `at`
and the node's beat are Redis's clock (stamp_record.lua), whatever the collector's clock says.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, fields

import orjson
import redis

from metrics_store.loops import PROCESS_INSTANCE
from metrics_store.redis.client import redis_now
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import STAMP_RECORD, lua_script

log = logging.getLogger(__name__)

# Fields of collectors silent this long are deleted by the next collector that beats.
FORGET_AFTER_S = 3600.0


@dataclass(frozen=True)
class CollectorCounters:
    node: str
    pid: int
    instance: str
    written: int
    dropped: int
    pending: int
    at: float  # stored: Redis's clock as it was written (the collector's is replaced)
    refused: int = 0  # refused for a clock too far from Redis's
    # The dropped events by why (DROP_REASONS); records of older collectors have none.
    dropped_by: dict[str, int] = field(default_factory=dict)

    @property
    def field(self) -> str:
        return f"{self.node}:{self.pid}:{self.instance}"

    def unstamped_json(self) -> bytes:
        """The record without `at`, which the script stamps by Redis's clock."""
        return orjson.dumps({k: v for k, v in asdict(self).items() if k != "at"})

    @classmethod
    def from_json(cls, raw: bytes | str) -> CollectorCounters | None:
        """The counters in `raw`, or None if it is not such a record (logged, not raised)."""
        try:
            data = orjson.loads(raw)
            # A field with a default may be missing from a record an older version wrote.
            known = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            return cls(**known)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring a malformed collector record: %s", exc)
            return None


def counters_now(
    node: str, dropped_by: dict[str, int], written: int, pending: int, refused: int = 0
) -> CollectorCounters:
    """This process's counters, to be stamped by Redis's clock as `beat` writes them."""
    dropped = sum(dropped_by.values())
    return CollectorCounters(
        node, os.getpid(), PROCESS_INSTANCE, written, dropped, pending, 0.0, refused, dropped_by
    )


def beat(client: redis.Redis, keys: Keys, counters: CollectorCounters) -> float:
    """The node's heartbeat and this collector's counters, stamped by Redis's clock, in one
    round trip (`counters.at` is not used). Returns Redis's clock (the stamp)."""
    args: list[str | bytes] = [counters.field, counters.unstamped_json(), counters.node]
    return float(lua_script(STAMP_RECORD).run(client, [keys.collectors, keys.live_nodes], args))


def forget_silent(client: redis.Redis, keys: Keys) -> None:
    """Delete the counters of collectors silent for FORGET_AFTER_S by Redis's clock (crashed
    processes)."""
    now_s = redis_now(client)
    stale = []
    for name, raw in client.hgetall(keys.collectors).items():
        counters = CollectorCounters.from_json(raw)
        if counters is None or counters.at < now_s - FORGET_AFTER_S:
            stale.append(name)
    if stale:
        client.hdel(keys.collectors, *stale)
