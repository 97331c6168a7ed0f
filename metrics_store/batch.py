"""Encode a batch of events as the KEYS and ARGV of the ingest script (see lua/ingest.lua).

The batch's counters are summed here, per bucket and member, so Redis does a handful of
ZINCRBYs per bucket instead of several per event.

On one Redis (or Sentinel) a batch is one call. On Redis Cluster a script may touch one slot
only: the data go to one shard in one call, and the few control writes (availability, events
refused, the node's heartbeat) follow in a second, small call on the control keys' slot.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

from metrics_store.events import Event, QueryEvent
from metrics_store.keys import (
    QUERY_COUNT,
    QUERY_ERRORS,
    QUERY_LATENCY_MS,
    ROUTING_COUNT,
    ROUTING_DECISION_MS,
    ROUTING_FALLBACKS,
    ROUTING_SCORE,
    Keys,
    member,
)
from metrics_store.settings import Settings

Arg = str | int | float
# Sums of one batch, per (fine bucket start, label): [count, sum, flagged, (decision ms sum)]
QuerySums = defaultdict[tuple[int, str], list[float]]
RoutingSums = defaultdict[tuple[int, str, str], list[float]]


@dataclass(frozen=True)
class EncodedBatch:
    keys: list[str]
    args: list[Arg]
    # Cluster: the control writes, to run once `keys`' shard took the data (the same batch id
    # marks it on the control slot, so a retry adds nothing twice). None: this call has them.
    control: EncodedBatch | None = None


class _KeyTable:
    """Lua's 1-based KEYS, each distinct key numbered once."""

    def __init__(self, initial: list[str]) -> None:
        self.keys = initial
        self._positions: dict[str, int] = {}
        self.retirements: dict[int, int] = {}  # bucket's KEYS index -> epoch second it retires

    def bucket(self, key: str, retires_at: int) -> int:
        found = self._positions.get(key)
        if found is None:
            self.keys.append(key)
            found = self._positions[key] = len(self.keys)
            self.retirements[found] = retires_at
        return found


class BatchEncoder:
    """Turns events into one ingest-script call; built once per collector and shard.

    `keys` name the data keys written; `control`, when given, is the store's control key set
    on another slot (Redis Cluster), written by a second call.
    """

    def __init__(self, settings: Settings, keys: Keys, control: Keys | None = None) -> None:
        self._settings = settings
        self._keys = keys
        self._control = control
        # Split: the data call never touches the control keys, so their places hold a key of
        # the shard's own slot (a script's keys must share one slot), never written.
        owner = keys if control is None else None
        self._fixed = [
            keys.query_stream,
            keys.routing_stream,
            owner.live_nodes if owner else keys.query_stream,
            owner.availability if owner else keys.query_stream,
            keys.bucket_index,
            owner.refused if owner else keys.query_stream,
        ]
        self._recent = [keys.recent_queries(tier) for tier in settings.tiers]
        # KEYS index of each tier's recent list: after the 6 fixed keys and the batch marker.
        self._recent_index = {tier: 8 + i for i, tier in enumerate(settings.tiers)}

    def encode(
        self, events: list[Event], batch_id: str, now_s: float, refused: int = 0
    ) -> EncodedBatch:
        """The script call that writes `events` once, under the idempotency marker `batch_id`.

        `refused` counts events taken out of the batch for their clock, recorded with it.
        """
        bucket_s = self._settings.bucket_s
        keep = self._settings.sparkline_points
        query_entries: list[Arg] = []
        routing_entries: list[Arg] = []
        availability: list[Arg] = []
        query_sums: QuerySums = defaultdict(lambda: [0, 0.0, 0])
        routing_sums: RoutingSums = defaultdict(lambda: [0, 0.0, 0, 0.0])
        recent: dict[str, deque[QueryEvent]] = {}
        for event in events:
            if event[0] == "q":
                _, ts, tier, latency, tokens, generation, error = event
                flag = "1" if error else "0"
                query_entries.append(f"{ts!r} {tier} {latency!r} {tokens} {generation!r} {flag}")
                sums = query_sums[int(ts // bucket_s) * bucket_s, tier]
                sums[0] += 1
                sums[1] += latency
                sums[2] += error
                if tier not in recent:
                    recent[tier] = deque(maxlen=keep)
                recent[tier].append(event)  # formatted below: only the newest few are kept
            elif event[0] == "r":
                _, ts, complexity, tier, score, decision_ms, fallback = event
                flag = "1" if fallback else "0"
                routing_entries.append(
                    f"{ts!r} {complexity} {tier} {score!r} {decision_ms!r} {flag}"
                )
                cell = routing_sums[int(ts // bucket_s) * bucket_s, complexity, tier]
                cell[0] += 1
                cell[1] += score
                cell[2] += fallback
                cell[3] += decision_ms
            else:
                _, _, tier, available, total = event
                availability += (f"{self._settings.node}:{tier}", f"{available}/{total}")

        table = _KeyTable([*self._fixed, self._keys.written_batch(batch_id), *self._recent])
        increments = self._query_increments(query_sums, table)
        increments += self._routing_increments(routing_sums, table)
        retirements: list[Arg] = []
        for index, retires_at in table.retirements.items():
            retirements += (index, retires_at)
        pushes: list[Arg] = []
        for tier, newest in recent.items():
            for _, ts, _, latency, tokens, generation, _ in newest:
                # The stamp orders the newest queries of several shards (reader.py merges).
                entry = f"{tokens} {generation!r} {latency!r} {ts!r}"
                pushes += (self._recent_index[tier], entry)
        stamps = [event[1] for event in events]
        if self._control is not None:
            control = self._encode_control(batch_id, now_s, availability, stamps, refused)
            availability, refused = [], 0
        else:
            control = None
        head = self._head(now_s, len(query_entries), len(routing_entries))
        counts = [
            len(increments) // 3,
            len(pushes) // 2,
            len(availability) // 2,
            len(retirements) // 2,
            self._settings.clock_skew_tolerance_s,
            min(stamps, default=0.0),
            max(stamps, default=0.0),
            refused,
            0 if self._control is not None else 1,  # the heartbeat: here, or in the control call
        ]
        sections = [query_entries, routing_entries, increments, pushes, availability, retirements]
        args = head + counts + [arg for section in sections for arg in section]
        return EncodedBatch(table.keys, args, control)

    def _encode_control(
        self,
        batch_id: str,
        now_s: float,
        availability: list[Arg],
        stamps: list[float],
        refused: int,
    ) -> EncodedBatch | None:
        """The control call of a split batch: availability, refused count and heartbeat."""
        c = self._control
        if c is None or (not availability and not refused):
            return None  # the flusher's own heartbeat keeps the node live (collector_stats.py)
        keys = [
            c.query_stream,  # KEYS[1], [2] and [5] name the control slot; nothing is written there
            c.routing_stream,
            c.live_nodes,
            c.availability,
            c.bucket_index,
            c.refused,
            c.written_batch(batch_id),
        ]
        head = self._head(now_s, 0, 0, recent_lists=0)
        # Tolerance 0: the data call already checked the clocks against Redis's.
        oldest, newest = min(stamps, default=0.0), max(stamps, default=0.0)
        counts = [0, 0, len(availability) // 2, 0, 0, oldest, newest, refused, 1]
        return EncodedBatch(keys, head + counts + availability)

    def _head(
        self, now_s: float, queries: int, decisions: int, recent_lists: int | None = None
    ) -> list[Arg]:
        s = self._settings
        return [
            s.batch_id_ttl_s,
            s.stream_maxlen,
            s.retention_s,
            s.sparkline_points,
            s.node,
            now_s,
            len(self._recent) if recent_lists is None else recent_lists,
            queries,
            decisions,
        ]

    def _bucket_indexes(self, table: _KeyTable, kind: str, fine_start: int) -> tuple[int, int]:
        """KEYS indexes of the fine bucket and of the rollup bucket holding it."""
        s, keys = self._settings, self._keys
        name = keys.query_bucket if kind == "q" else keys.routing_bucket
        rollup_start = fine_start // s.rollup_s * s.rollup_s
        # A bucket retires once the whole retention period has passed since its end.
        fine = table.bucket(name(s.bucket_s, fine_start), fine_start + s.bucket_s + s.retention_s)
        rollup_end = rollup_start + s.rollup_s + s.retention_s
        return fine, table.bucket(name(s.rollup_s, rollup_start), rollup_end)

    def _query_increments(self, sums: QuerySums, table: _KeyTable) -> list[Arg]:
        out: list[Arg] = []
        for (fine_start, tier), (count, latency, errors) in sums.items():
            for bucket in self._bucket_indexes(table, "q", fine_start):
                out += (bucket, member(QUERY_COUNT, tier), count)
                out += (bucket, member(QUERY_LATENCY_MS, tier), latency)
                if errors:
                    out += (bucket, member(QUERY_ERRORS, tier), errors)
        return out

    def _routing_increments(self, sums: RoutingSums, table: _KeyTable) -> list[Arg]:
        out: list[Arg] = []
        for (fine_start, complexity, tier), (count, score, fallbacks, ms) in sums.items():
            for bucket in self._bucket_indexes(table, "r", fine_start):
                out += (bucket, member(ROUTING_COUNT, complexity, tier), count)
                out += (bucket, member(ROUTING_SCORE, complexity, tier), score)
                out += (bucket, ROUTING_DECISION_MS, ms)
                if fallbacks:
                    out += (bucket, ROUTING_FALLBACKS, fallbacks)
        return out
