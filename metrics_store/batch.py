"""Encode a batch of events as the KEYS and ARGV of the ingest script (see lua/ingest.lua)."""

from __future__ import annotations

from dataclasses import dataclass

from metrics_store.buckets import bucket_start
from metrics_store.events import Event
from metrics_store.keys import Keys
from metrics_store.settings import Settings

Arg = str | int | float


@dataclass(frozen=True)
class EncodedBatch:
    keys: list[str]
    args: list[Arg]


class BatchEncoder:
    """Turns events into one ingest-script call; built once per collector."""

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self._settings = settings
        self._keys = keys
        fixed = [keys.query_stream, keys.routing_stream, keys.live_nodes, keys.availability]
        self._fixed = fixed
        self._recent = [keys.recent_queries(tier) for tier in settings.tiers]
        # KEYS index of each tier's recent list: after the 4 fixed keys and the batch marker.
        self._recent_index = {tier: 6 + i for i, tier in enumerate(settings.tiers)}

    def encode(self, events: list[Event], batch_id: str, now_s: float) -> EncodedBatch:
        """The script call that writes `events` once, under the idempotency marker `batch_id`."""
        keys = self._keys
        table = [*self._fixed, keys.written_batch(batch_id), *self._recent]
        positions: dict[str, int] = {}

        def index(key: str) -> int:
            found = positions.get(key)
            if found is None:
                table.append(key)
                found = positions[key] = len(table)
            return found

        fine_s, rollup_s = self._settings.bucket_s, self._settings.rollup_s
        body: list[Arg] = []
        for event in events:
            if event[0] == "q":
                _, ts, tier, latency, tokens, generation, error = event
                fine = index(keys.query_bucket(fine_s, bucket_start(ts, fine_s)))
                rollup = index(keys.query_bucket(rollup_s, bucket_start(ts, rollup_s)))
                flag = "1" if error else "0"
                recent = self._recent_index[tier]
                body += ["q", ts, tier, latency, tokens, generation, flag, fine, rollup, recent]
            elif event[0] == "r":
                _, ts, complexity, tier, score, decision_ms, fallback = event
                fine = index(keys.routing_bucket(fine_s, bucket_start(ts, fine_s)))
                rollup = index(keys.routing_bucket(rollup_s, bucket_start(ts, rollup_s)))
                flag = "1" if fallback else "0"
                body += ["r", ts, complexity, tier, score, decision_ms, flag, fine, rollup]
            else:
                _, _, tier, available, total = event
                body += ["a", tier, available, total]
        settings = self._settings
        head: list[Arg] = [
            settings.batch_id_ttl_s,
            settings.stream_maxlen,
            settings.retention_s,
            settings.sparkline_points,
            settings.node,
            now_s,
            len(self._recent),
        ]
        return EncodedBatch(table, head + body)
