"""Encode a batch of events as the KEYS and ARGV of the ingest script (see lua/ingest.lua).

The batch's counters are summed here, per bucket and member, so Redis does a handful of
ZINCRBYs per bucket instead of several per event.
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
    TOTAL_LATENCY_MS,
    TOTAL_QUERIES,
    TOTAL_ROUTING,
    TOTAL_TOKENS,
    Keys,
    member,
)
from metrics_store.settings import Settings

Arg = str | int | float
# KEYS index of the all-time totals (see lua/ingest.lua's header).
TOTALS_INDEX = 7
# Sums of one batch, per (fine bucket start, label): [count, sum, flagged, tokens or decision ms]
QuerySums = defaultdict[tuple[int, str], list[float]]
RoutingSums = defaultdict[tuple[int, str, str], list[float]]


@dataclass(frozen=True)
class EncodedBatch:
    keys: list[str]
    args: list[Arg]


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
    """Turns events into one ingest-script call; built once per collector."""

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self._settings = settings
        self._keys = keys
        self._fixed = [
            keys.query_stream,
            keys.routing_stream,
            keys.live_nodes,
            keys.availability,
            keys.bucket_index,
            keys.refused,
            keys.totals,
        ]
        self._recent = [keys.recent_queries(tier) for tier in settings.tiers]
        # KEYS index of each tier's recent list: after the 7 fixed keys and the batch marker.
        self._recent_index = {tier: 9 + i for i, tier in enumerate(settings.tiers)}

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
        query_sums: QuerySums = defaultdict(lambda: [0, 0.0, 0, 0])
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
                sums[3] += tokens
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
        increments += _total_increments(query_sums, routing_sums)
        retirements: list[Arg] = []
        for index, retires_at in table.retirements.items():
            retirements += (index, retires_at)
        pushes: list[Arg] = []
        for tier, newest in recent.items():
            for _, _, _, latency, tokens, generation, _ in newest:
                pushes += (self._recent_index[tier], f"{tokens} {generation!r} {latency!r}")
        head = self._head(now_s, len(query_entries), len(routing_entries))
        stamps = [event[1] for event in events]
        counts = [
            len(increments) // 3,
            len(pushes) // 2,
            len(availability) // 2,
            len(retirements) // 2,
            self._settings.clock_skew_tolerance_s,
            min(stamps, default=0.0),
            max(stamps, default=0.0),
            refused,
        ]
        sections = [query_entries, routing_entries, increments, pushes, availability, retirements]
        args = head + counts + [arg for section in sections for arg in section]
        return EncodedBatch(table.keys, args)

    def _head(self, now_s: float, queries: int, decisions: int) -> list[Arg]:
        s = self._settings
        return [
            s.batch_id_ttl_s,
            s.stream_maxlen,
            s.retention_s,
            s.sparkline_points,
            s.node,
            now_s,
            len(self._recent),
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
        for (fine_start, tier), (count, latency, errors, _) in sums.items():
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


def _total_increments(queries: QuerySums, routing: RoutingSums) -> list[Arg]:
    """The batch's additions to the all-time totals (summed over its buckets)."""
    totals: defaultdict[str, float] = defaultdict(float)
    for (_, tier), (count, latency, errors, tokens) in queries.items():
        totals[member(TOTAL_QUERIES, tier, "0")] += count - errors
        totals[member(TOTAL_QUERIES, tier, "1")] += errors
        totals[member(TOTAL_TOKENS, tier)] += tokens
        totals[member(TOTAL_LATENCY_MS, tier)] += latency
    for (_, complexity, tier), (count, _, fallbacks, _) in routing.items():
        totals[member(TOTAL_ROUTING, complexity, tier, "0")] += count - fallbacks
        totals[member(TOTAL_ROUTING, complexity, tier, "1")] += fallbacks
    out: list[Arg] = []
    for name, amount in totals.items():
        if amount:
            out += (TOTALS_INDEX, name, amount)
    return out
