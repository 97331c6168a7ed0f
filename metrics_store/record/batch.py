"""Encode a batch of events as one call of the ingest script (ingest.lua, beside this module).

The call's KEYS name every key it writes, each once. Its ARGV open with the batch's header,
a JSON object of named fields whose `version` is `FORMAT_VERSION`; the header also names
the sections that follow in ARGV, in order, each with its length. The script reads every
field and section by name, and refuses a batch of another version, or with a section it does
not know, before writing anything: this module and the script cannot drift apart silently.
(The bulk stays plain ARGV values rather than going inside the JSON: decoding it cost Redis
5 % more CPU per event, and Redis is the ceiling shared by every collector; the figures are
in docs/performance.md.)

The batch's counters are summed here, per bucket and member, so Redis does a handful of
ZINCRBYs per bucket instead of several per event.

On one Redis (or Sentinel) a batch is one call. On Redis Cluster a script may touch one slot
only: the data go to one shard in one call, and the few control writes (availability, events
refused) follow in a second, small call on the control keys' slot.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from metrics_store.buckets import Level, bucket_levels
from metrics_store.histogram import bin_counts
from metrics_store.record.events import (
    AvailabilityEvent,
    Event,
    QueryEvent,
    RoutingEvent,
    tpot_ms,
)
from metrics_store.record.judge import QueryJudge, Thresholds, is_good
from metrics_store.redis.keys import (
    ALL_TIME_FIGURES,
    FIGURE_LATENCY,
    FIGURE_QUEUE,
    FIGURE_TPOT,
    FIGURE_TTFT,
    QUERY_COUNT,
    QUERY_ERRORS,
    QUERY_GOOD,
    QUERY_JUDGED,
    QUERY_LATENCY_MS,
    ROUTING_COUNT,
    ROUTING_DECISION_MS,
    ROUTING_FALLBACKS,
    ROUTING_SCORE,
    TOTAL_GOOD,
    TOTAL_JUDGED,
    TOTAL_LATENCY_MS,
    TOTAL_QUERIES,
    TOTAL_ROUTING,
    TOTAL_TOKENS,
    Keys,
    member,
)
from metrics_store.settings import Settings

# The layout of the header and its sections; ingest.lua's FORMAT says which one it reads.
# Version 1 was 19 positional ARGV values before the sections, which the script now refuses;
# version 2 had no change feed (KEYS[9] and [10]); version 3 wrote each batch's histogram
# bins at once, at every level, and had no fold state (KEYS[11]).
FORMAT_VERSION = 4
# Entries the change feed keeps (approximately): readers further behind drop their caches. An
# entry is a batch's counters and bins (a few KB for 1,000 events): this bounds its memory.
CHANGE_FEED_MAXLEN = 1_000
# A fold (fold.lua) adds the waiting entries' bins to the histogram hashes once this many
# wait, or once the oldest has waited FOLD_AGE_MS. More entries per fold share more bins (fewer
# hash writes per event), but hold Redis longer in the one call that folds; readers hold the
# waiting entries in memory. Measured in docs/performance.md ("Writes: folding").
FOLD_ENTRIES = 32
FOLD_AGE_MS = 1_000
# And one call folds the oldest waiting entries up to about this many hash fields (at least one
# entry): ~60 ms of Redis, whatever the entries hold. At full load 32 entries write ~14,000
# fields; entries whose bins spread over many buckets (a backfill) are folded a few at a time.
FOLD_WRITES = 20_000
# A histogram's sum is sent in multiples of 2^-10 ms (under a microsecond): such numbers add
# exactly, in any order and in any of Redis's, Lua's and Python's arithmetic, so a reader that
# adds the waiting entries to what it read agrees with one that read after the fold.
SUM_STEP_MS = 2.0**-10

Arg = str | int | float
# The figures a query's values go to, in HistogramSums' order.
QUERY_FIGURES = (FIGURE_LATENCY, FIGURE_TTFT, FIGURE_TPOT, FIGURE_QUEUE)
# Lua's 1-based KEYS (ingest.lua's header): 7 fixed keys, the batch marker, the change feed, its
# head and its fold state, the recent lists.
TOTALS_INDEX = 7
FIRST_RECENT_INDEX = 12
# Sums of one batch, per (fine bucket start, label): [count, sum, flagged, tokens or decision ms]
QuerySums = defaultdict[tuple[int, str], list[float]]
RoutingSums = defaultdict[tuple[int, str, str], list[float]]


class HistogramSums:
    """One batch's histograms, per (fine bucket start, figure, tier): value sum and bin counts.

    A query's values are kept as they come and binned per histogram in bulk when the batch is
    encoded (histogram.bin_counts): the collector's hot path appends four floats per query.
    Other sources (OTLP) add sums and bins directly.
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[int, str, str], float] = defaultdict(float)
        # bin -> count; and "err:<ppm>" -> values converted from a coarser histogram (keys.py)
        self.bins: dict[tuple[int, str, str], dict[int | str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        # (fine start, tier) -> the values of each of QUERY_FIGURES, not binned yet
        self._values: dict[tuple[int, str], tuple[list[float], ...]] = {}

    def add_query(self, fine_start: int, event: QueryEvent) -> None:
        """Every figure the query carries (events.tpot_ms defines time per output token)."""
        _, _, tier, latency, tokens, _, _, ttft, queue = event
        values = self._values.get((fine_start, tier))
        if values is None:
            values = self._values[fine_start, tier] = ([], [], [], [])
        values[0].append(latency)
        if ttft is not None:
            values[1].append(ttft)
            tpot = tpot_ms(latency, tokens, ttft)
            if tpot is not None:
                values[2].append(tpot)
        if queue is not None:
            values[3].append(queue)

    def groups(self) -> list[tuple[tuple[int, str, str], float, dict[int | str, int]]]:
        """Every histogram of the batch: (fine start, figure, tier), its sum and its bins."""
        for (fine_start, tier), values in self._values.items():
            for figure, figure_values in zip(QUERY_FIGURES, values, strict=True):
                if figure_values:
                    key = (fine_start, figure, tier)
                    self.sums[key] += sum(figure_values)  # in order, as one at a time would
                    bins = self.bins[key]
                    for index, count in bin_counts(figure_values).items():
                        bins[index] += count
        self._values.clear()
        return [(key, total, self.bins[key]) for key, total in self.sums.items()]

    def __bool__(self) -> bool:
        return bool(self.sums or self._values)


@dataclass(frozen=True)
class Claim:
    """A state the batch moves on with its data (ingest.lua `claims`): an OTLP stream's."""

    key: str
    expected: str  # the token of the state read ('' for none)
    state: str  # "<token> <payload>", which replaces it


@dataclass(frozen=True)
class EncodedBatch:
    keys: list[str]
    args: list[Arg]  # the header (JSON text), then its sections' values
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

    def retirement_section(self) -> list[Arg]:
        """The `retirements` section: KEYS index, epoch second it retires, TTL (s)."""
        out: list[Arg] = []
        for index, (retires_at, ttl_s) in self.retirements.items():
            out += (index, retires_at, ttl_s)
        return out


class _Fold:
    """One batch's events as the script writes them: stream entries, per-bucket sums and the
    newest queries of each tier (only those are formatted: the recent lists keep `keep`)."""

    def __init__(
        self, bucket_s: int, keep: int, node: str, thresholds: Thresholds | None = None
    ) -> None:
        self._bucket_s = bucket_s
        self._keep = keep
        self._node = node
        # Per judged tier, what a good query meets (judge.py); none judged: nothing counted.
        self._thresholds = thresholds or {}
        # (fine start, tier) -> [judged, good]: the queries judged, and the good among them
        self.good: defaultdict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
        self.queries: list[Arg] = []
        self.decisions: list[Arg] = []
        self.availability: list[Arg] = []
        self.query_sums: QuerySums = defaultdict(lambda: [0, 0.0, 0, 0])
        self.routing_sums: RoutingSums = defaultdict(lambda: [0, 0.0, 0, 0.0])
        self.histograms = HistogramSums()
        self.recent: dict[str, deque[QueryEvent]] = {}

    def add(self, events: list[Event]) -> None:
        query, routing, availability = self._query, self._routing, self._availability
        for event in events:
            if event[0] == "q":
                query(event)
            elif event[0] == "r":
                routing(event)
            else:
                availability(event)

    def _query(self, event: QueryEvent) -> None:
        _, ts, tier, latency, tokens, generation, error, _, _ = event
        flag = "1" if error else "0"
        self.queries.append(f"{ts!r} {tier} {latency!r} {tokens} {generation!r} {flag}")
        fine_start = int(ts // self._bucket_s) * self._bucket_s
        self.histograms.add_query(fine_start, event)
        sums = self.query_sums[fine_start, tier]
        sums[0] += 1
        sums[1] += latency
        sums[2] += error
        sums[3] += tokens
        if self._thresholds:
            judged = self._thresholds.get(tier)
            if judged is not None:
                cell = self.good[fine_start, tier]
                cell[0] += 1
                cell[1] += is_good(event, judged)
        newest = self.recent.get(tier)
        if newest is None:
            newest = self.recent[tier] = deque(maxlen=self._keep)
        newest.append(event)

    def _routing(self, event: RoutingEvent) -> None:
        _, ts, complexity, tier, score, decision_ms, fallback = event
        flag = "1" if fallback else "0"
        self.decisions.append(f"{ts!r} {complexity} {tier} {score!r} {decision_ms!r} {flag}")
        cell = self.routing_sums[int(ts // self._bucket_s) * self._bucket_s, complexity, tier]
        cell[0] += 1
        cell[1] += score
        cell[2] += fallback
        cell[3] += decision_ms

    def _availability(self, event: AvailabilityEvent) -> None:
        _, _, tier, available, total = event
        self.availability += (f"{self._node}:{tier}", f"{available}/{total}")


class BatchEncoder:
    """Turns events into one ingest-script call; built once per collector and shard.

    `keys` name the data keys written; `control`, when given, is the store's control key set
    on another slot (Redis Cluster), written by a second call.
    """

    def __init__(
        self,
        settings: Settings,
        keys: Keys,
        control: Keys | None = None,
        judge: QueryJudge | None = None,
    ) -> None:
        self._settings = settings
        self._judge = judge
        self._keys = keys
        self._control = control
        # Split: the data call never touches the control keys, so their places hold a key of
        # the shard's own slot (a script's keys must share one slot), never written.
        owner = keys if control is None else None
        self._levels: list[Level] = bucket_levels(
            settings.retention.bucket_s,
            settings.retention.rollup_s,
            settings.retention.retention_s,
            settings.retention.history_s,
            settings.slo.history_s,
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
        self._recent_index = {t: FIRST_RECENT_INDEX + i for i, t in enumerate(settings.tiers)}

    def encode(
        self, events: list[Event], batch_id: str, now_s: float, refused: int = 0
    ) -> EncodedBatch:
        """The script call that writes `events` once, under the idempotency marker `batch_id`.

        `refused` counts events taken out of the batch for their clock, recorded with it.
        """
        s = self._settings
        thresholds = self._judge.thresholds if self._judge is not None else None
        fold = _Fold(s.retention.bucket_s, s.retention.sparkline_points, s.node, thresholds)
        fold.add(events)
        table = _KeyTable([*self._fixed, *self._marker_and_feed(batch_id), *self._recent])
        stamps = _stamp_range(events)
        header = self._header(now_s, stamps, len(self._recent))
        sections = self._data_sections(fold, table)
        if self._control is None:
            header.update(refused=refused, heartbeat=True)
            sections["availability"] = fold.availability
            control = None
        else:  # the heartbeat: the flusher's own beat, by Redis's clock (collector_stats.py)
            control = self._encode_control(batch_id, now_s, fold.availability, stamps, refused)
        return EncodedBatch(table.keys, _arguments(header, sections), control)

    def encode_sums(
        self,
        query_sums: QuerySums,
        histograms: HistogramSums,
        batch_id: str,
        now_s: float,
        claims: Sequence[Claim] = (),
        claim_ttl_s: int = 0,
    ) -> EncodedBatch:
        """An aggregate batch: counters and histograms summed already (another source's,
        such as OTLP's), under the marker `batch_id`; no stream entry, no recent-list push.
        `claims` move states on with the data, or the call writes nothing (ingest.lua)."""
        s = self._settings
        fold = _Fold(s.retention.bucket_s, s.retention.sparkline_points, s.node)
        fold.query_sums, fold.histograms = query_sums, histograms
        table = _KeyTable([*self._fixed, *self._marker_and_feed(batch_id)])
        header = self._header(now_s, (0.0, 0.0), recent_lists=0)
        header["claim_ttl_s"] = claim_ttl_s
        sections = self._data_sections(fold, table)
        if query_sums or histograms:
            # A shard's totals mark it written (readers skip a shard without them, fan_out.py):
            # a batch of histograms alone still touches them, adding nothing.
            sections["increments"] += (TOTALS_INDEX, member(TOTAL_TOKENS, s.tiers[0]), 0)
        sections["claims"] = [
            arg for c in claims for arg in (table.permanent(c.key), c.expected, c.state)
        ]
        return EncodedBatch(table.keys, _arguments(header, sections))

    def _data_sections(self, fold: _Fold, table: _KeyTable) -> dict[str, list[Arg]]:
        """The sections a data call writes; numbering their keys fills `table`."""
        increments = self._query_increments(fold.query_sums, table)
        increments += self._routing_increments(fold.routing_sums, table)
        increments += self._good_increments(fold.good, table)
        increments += _total_increments(fold.query_sums, fold.routing_sums)
        return {
            "queries": fold.queries,
            "decisions": fold.decisions,
            "increments": increments,
            "pushes": self._pushes(fold.recent),
            "histograms": self._histogram_section(fold.histograms, table),
            "retirements": table.retirement_section(),  # last: the sections above fill it
        }

    def _encode_control(
        self,
        batch_id: str,
        now_s: float,
        availability: list[Arg],
        stamps: tuple[float, float],
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
            c.query_stream,  # KEYS[9] to [11], the change feed's: a control call writes no
            c.query_stream,  # bucket
            c.query_stream,
        ]
        header = self._header(now_s, stamps, recent_lists=0)
        # Tolerance 0: the data call already checked the clocks against Redis's. No heartbeat:
        # it would take this call's unchecked clock; the flusher's own beat, by Redis's
        # clock, keeps the node live.
        header.update(skew_tolerance_s=0, refused=refused)
        return EncodedBatch(keys, _arguments(header, {"availability": availability}))

    def _marker_and_feed(self, batch_id: str) -> list[str]:
        """KEYS[8] to [11]: the batch's idempotency marker, the shard's change feed, its head and
        its fold state."""
        keys = self._keys
        return [keys.written_batch(batch_id), keys.change_feed, keys.change_head, keys.fold_state]

    def _header(
        self, now_s: float, stamps: tuple[float, float], recent_lists: int
    ) -> dict[str, Any]:
        """The header's fields, but for its sections (`_arguments` adds them)."""
        s = self._settings
        return {
            "version": FORMAT_VERSION,
            "batch_ttl_s": s.recording.batch_id_ttl_s,
            "stream_maxlen": s.recording.stream_maxlen,
            "feed_maxlen": CHANGE_FEED_MAXLEN,
            "fold_entries": FOLD_ENTRIES,
            "fold_age_ms": FOLD_AGE_MS,
            "fold_writes": FOLD_WRITES,
            "retention_s": s.retention.retention_s,
            "recent_len": s.retention.sparkline_points,
            "recent_lists": recent_lists,
            "node": s.node,
            "now_s": now_s,
            "skew_tolerance_s": s.recording.clock_skew_tolerance_s,
            "oldest_s": stamps[0],
            "newest_s": stamps[1],
            "refused": 0,
            "heartbeat": False,
        }

    def _pushes(self, recent: dict[str, deque[QueryEvent]]) -> list[Arg]:
        """The `pushes` section: KEYS index of a tier's recent list, entry; oldest first."""
        out: list[Arg] = []
        for tier, newest in recent.items():
            index = self._recent_index[tier]
            for _, ts, _, latency, tokens, generation, _, _, _ in newest:
                # The stamp orders the newest queries of several shards (reader.py merges).
                out += (index, f"{tokens} {generation!r} {latency!r} {ts!r}")
        return out

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

    def _histogram_section(self, histograms: HistogramSums, table: _KeyTable) -> list[Arg]:
        """The `histograms` section: one value, a JSON array of groups [[KEYS indexes of its
        buckets (one per level, and the all-time hash where kept)], sum, [field, count, ...]]:
        the values' sum in ms (in steps of SUM_STEP_MS), then each occupied bin (its index as
        text, or "err:<ppm>") and its count,
        added to every bucket of the group by a fold (fold.lua). The script only carries it to
        the change feed; the fold and the readers decode it in C (cjson, orjson)."""
        groups: list[Any] = []
        all_time = ALL_TIME_FIGURES if self._judge is None else self._judge.all_time_figures
        for (fine_start, figure, tier), total, bins in histograms.groups():

            def name(size_s: int, start: int, figure: str = figure, tier: str = tier) -> str:
                return self._keys.histogram_bucket(figure, tier, size_s, start)

            indexes = self._level_indexes(table, fine_start, name)
            if figure in all_time:
                indexes.append(table.permanent(self._keys.histogram_totals(figure, tier)))
            flat: list[int | str] = []
            for field, count in bins.items():
                flat += (str(field), count)  # a field as text: the fold uses it as is
            groups.append([indexes, round(total / SUM_STEP_MS) * SUM_STEP_MS, flat])
        return [orjson.dumps(groups).decode()] if groups else []

    def _query_increments(self, sums: QuerySums, table: _KeyTable) -> list[Arg]:
        out: list[Arg] = []
        for (fine_start, tier), (count, latency, errors, _) in sums.items():
            for bucket in self._bucket_indexes(table, "q", fine_start):
                out += (bucket, member(QUERY_COUNT, tier), count)
                out += (bucket, member(QUERY_LATENCY_MS, tier), latency)
                if errors:
                    out += (bucket, member(QUERY_ERRORS, tier), errors)
        return out

    def _good_increments(
        self, good: dict[tuple[int, str], list[int]], table: _KeyTable
    ) -> list[Arg]:
        """Judged queries, and the good among them, per bucket and in the all-time totals
        (good added even when 0: the counter's presence says the tier is judged)."""
        out: list[Arg] = []
        totals: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (fine_start, tier), (judged, count) in good.items():
            for bucket in self._bucket_indexes(table, "q", fine_start):
                out += (bucket, member(QUERY_JUDGED, tier), judged)
                out += (bucket, member(QUERY_GOOD, tier), count)
            totals[tier][0] += judged
            totals[tier][1] += count
        for tier, (judged, count) in totals.items():
            out += (TOTALS_INDEX, member(TOTAL_JUDGED, tier), judged)
            out += (TOTALS_INDEX, member(TOTAL_GOOD, tier), count)
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


def _stamp_range(events: list[Event]) -> tuple[float, float]:
    """The oldest and newest stamps of a batch (0, 0 for none): the script checks both."""
    if not events:
        return 0.0, 0.0
    stamps = [event[1] for event in events]
    return min(stamps), max(stamps)


def _arguments(header: dict[str, Any], sections: dict[str, list[Arg]]) -> list[Arg]:
    """ARGV: the header, naming each section and its length in order, then their values."""
    header["sections"] = [[name, len(values)] for name, values in sections.items()]
    args: list[Arg] = [orjson.dumps(header).decode()]  # text: `Arg` has no bytes
    for values in sections.values():
        args += values
    return args


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
