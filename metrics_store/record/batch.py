"""Encode a batch of events as the KEYS and ARGV of the ingest script (see lua/ingest.lua).

The batch's counters are summed here, per bucket and member, so Redis does a handful of
ZINCRBYs per bucket instead of several per event.

On one Redis (or Sentinel) a batch is one call. On Redis Cluster a script may touch one slot
only: the data go to one shard in one call, and the few control writes (availability, events
refused) follow in a second, small call on the control keys' slot.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from metrics_store.buckets import Level, bucket_levels
from metrics_store.histogram import bin_index
from metrics_store.record.events import Event, QueryEvent
from metrics_store.redis.keys import (
    ALL_TIME_FIGURES,
    FIGURE_LATENCY,
    FIGURE_QUEUE,
    FIGURE_TPOT,
    FIGURE_TTFT,
    HISTOGRAM_SUM,
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


class HistogramSums:
    """One batch's histograms, per (fine bucket start, figure, tier): value sum and bin counts."""

    def __init__(self) -> None:
        self.sums: dict[tuple[int, str, str], float] = defaultdict(float)
        self.bins: dict[tuple[int, str, str], dict[int, int]] = defaultdict(
            lambda: defaultdict(int)
        )

    def add(self, fine_start: int, figure: str, tier: str, value_ms: float) -> None:
        key = (fine_start, figure, tier)
        self.sums[key] += value_ms
        self.bins[key][bin_index(value_ms)] += 1

    def add_query(self, fine_start: int, event: QueryEvent) -> None:
        """Every figure the query carries (docs/latency.md defines time per output token)."""
        _, _, tier, latency, tokens, _, _, ttft, queue = event
        self.add(fine_start, FIGURE_LATENCY, tier, latency)
        if ttft is not None:
            self.add(fine_start, FIGURE_TTFT, tier, ttft)
            if tokens > 1:
                self.add(fine_start, FIGURE_TPOT, tier, max(0.0, latency - ttft) / (tokens - 1))
        if queue is not None:
            self.add(fine_start, FIGURE_QUEUE, tier, queue)


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
        # bucket's KEYS index -> (epoch second it retires, its TTL after this write)
        self.retirements: dict[int, tuple[int, int]] = {}

    def permanent(self, key: str) -> int:
        """A key that never retires (no index entry, no EXPIRE): the all-time totals."""
        found = self._positions.get(key)
        if found is None:
            self.keys.append(key)
            found = self._positions[key] = len(self.keys)
        return found

    def bucket(self, key: str, retires_at: int, ttl_s: int) -> int:
        found = self._positions.get(key)
        if found is None:
            self.keys.append(key)
            found = self._positions[key] = len(self.keys)
            self.retirements[found] = (retires_at, ttl_s)
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
        self._levels: list[Level] = bucket_levels(
            settings.bucket_s, settings.rollup_s, settings.retention_s, settings.history_s
        )
        self._fixed = [
            keys.query_stream,
            keys.routing_stream,
            owner.live_nodes if owner else keys.query_stream,
            owner.availability if owner else keys.query_stream,
            keys.bucket_index,
            owner.refused if owner else keys.query_stream,
            keys.totals,  # a data key: each shard keeps its own, readers sum them
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
        histograms = HistogramSums()
        recent: dict[str, deque[QueryEvent]] = {}
        for event in events:
            if event[0] == "q":
                _, ts, tier, latency, tokens, generation, error, _, _ = event
                flag = "1" if error else "0"
                query_entries.append(f"{ts!r} {tier} {latency!r} {tokens} {generation!r} {flag}")
                fine_start = int(ts // bucket_s) * bucket_s
                histograms.add_query(fine_start, event)
                sums = query_sums[fine_start, tier]
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
        groups, histogram_args = self._histogram_increments(histograms, table)
        retirements: list[Arg] = []
        for index, (retires_at, ttl_s) in table.retirements.items():
            retirements += (index, retires_at, ttl_s)
        pushes: list[Arg] = []
        for tier, newest in recent.items():
            for _, ts, _, latency, tokens, generation, _, _, _ in newest:
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
            len(retirements) // 3,
            self._settings.clock_skew_tolerance_s,
            min(stamps, default=0.0),
            max(stamps, default=0.0),
            refused,
            0
            if self._control is not None
            else 1,  # the heartbeat: here, or the flusher's beat (cluster)
            groups,
        ]
        sections = [
            query_entries,
            routing_entries,
            increments,
            pushes,
            availability,
            retirements,
            histogram_args,
        ]
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
        """The control call of a split batch: availability and refused count."""
        c = self._control
        if c is None or (not availability and not refused):
            return None  # the flusher's own heartbeat keeps the node live (collector_stats.py)
        keys = [
            # KEYS[1], [2], [5] and [7] name the control slot; nothing is written there
            c.query_stream,
            c.routing_stream,
            c.live_nodes,
            c.availability,
            c.bucket_index,
            c.refused,
            c.query_stream,  # KEYS[7], the totals' place: they are data, on the shard
            c.written_batch(batch_id),
        ]
        head = self._head(now_s, 0, 0, recent_lists=0)
        # Tolerance 0: the data call already checked the clocks against Redis's. No heartbeat
        # (ARGV[18] 0): it would take this call's unchecked clock; the flusher's own beat,
        # by Redis's clock, keeps the node live.
        oldest, newest = min(stamps, default=0.0), max(stamps, default=0.0)
        counts = [0, 0, len(availability) // 2, 0, 0, oldest, newest, refused, 0, 0]
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

    def _bucket_indexes(self, table: _KeyTable, kind: str, fine_start: int) -> list[int]:
        """KEYS indexes of the fine bucket and of each rollup bucket holding it."""
        keys = self._keys
        name = keys.query_bucket if kind == "q" else keys.routing_bucket
        return self._level_indexes(table, fine_start, name)

    def _level_indexes(
        self, table: _KeyTable, fine_start: int, name: Callable[[int, int], str]
    ) -> list[int]:
        """KEYS index of the bucket of each level holding `fine_start`, named by `name`."""
        out = []
        for level in self._levels:
            start = fine_start // level.size_s * level.size_s
            # A bucket retires once its level's whole retention has passed since its end.
            retires_at = start + level.size_s + level.retention_s
            out.append(table.bucket(name(level.size_s, start), retires_at, level.retention_s))
        return out

    def _histogram_increments(
        self, histograms: HistogramSums, table: _KeyTable
    ) -> tuple[int, list[Arg]]:
        """Groups of the histogram section: each bucket level's key, the sum, then the bins."""
        out: list[Arg] = []
        for (fine_start, figure, tier), total in histograms.sums.items():

            def name(size_s: int, start: int, figure: str = figure, tier: str = tier) -> str:
                return self._keys.histogram_bucket(figure, tier, size_s, start)

            indexes = self._level_indexes(table, fine_start, name)
            if figure in ALL_TIME_FIGURES:
                indexes.append(table.permanent(self._keys.histogram_totals(figure, tier)))
            bins = histograms.bins[fine_start, figure, tier]
            out += (len(indexes), *indexes, len(bins) + 1, HISTOGRAM_SUM, repr(total))
            for index, count in bins.items():
                out += (index, count)
        return len(histograms.sums), out

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
