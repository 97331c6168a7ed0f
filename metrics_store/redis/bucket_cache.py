"""A replica's copy of the bucket keys it reads, kept exact by the shards' change feeds.

Every write of the ingest script appends what it adds (its counters and histogram bins, with
the keys they go to) to its shard's change feed (`{p}:changes`), in the same atomic call. A
replica keeps the contents of the keys it has read; before each answer it asks the feed for the
entries after the last one it saw (read.lua's CHANGES, in the answer's own read call) and adds
them to what it holds, as the script added them to the keys. So Redis's work per answer
follows what was written since the last answer, not the window: a 7-day window costs it what a
30-minute one does, and a fresh write costs it its own entry, not the buckets it touched.

Histogram bins reach their hashes later than the entry that brings them: a fold adds the bins
of many entries at once (record/fold.lua). The copy holds a histogram as the feed says it is,
bins waiting included, and keeps the entries not folded yet (`waiting`): a hash it fetches
holds the folded ones only, and the waiting ones up to the call's head are added to it. A fold
changes no content the copy holds, and writes no entry.

Counts are added exactly; a sorted set's sums (latency_ms) in the feed's order, as Redis added
them (doubles both); a histogram's "sum" comes in steps of 2^-10 ms, which add exactly in any
order (record/batch.py's SUM_STEP_MS), so a copy that fetched a hash before a fold agrees with
one that fetched it after.
Where the feed cannot vouch for the copy (its last entry is gone: trimmed, lost in a
failover, or the store was flushed), the shard's copy is dropped and read again.

Sums over many keys (a window's buckets) are kept too, per list of keys, and reused while none
of its keys changed: the oldest keys of a window (sealed buckets, written again only by a late
batch) are summed once; the newest few (`HOT_KEYS`) are added on every answer.

The cache is exact, never approximate: an answer sums the contents the store held at its
read call, which started after the request did (flush-then-GET holds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from metrics_store.redis.keys import HISTOGRAM_SUM

Pairs = dict[bytes, float]
HISTOGRAM_SUM_FIELD = HISTOGRAM_SUM.encode()  # the one hash field written with HINCRBYFLOAT
Key = str | bytes
# The newest keys of a window's list, summed on every answer instead of memoised: they are the
# ones batches write.
HOT_KEYS = 6
# Entries a reply of the change feed may carry before the replica reads its keys afresh.
MAX_FEED_ENTRIES = 2_000
# Keys and sums no answer used for this long are let go (windows move on).
UNUSED_S = 600.0
SWEEP_EVERY_S = 60.0


def as_bytes(key: Key) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


def parse_pairs(kind: bytes, flat: Sequence[bytes]) -> Pairs:
    """A FETCH or CHANGES content (flat [name, value, ...]) as name -> value."""
    if kind == b"n":
        return {}
    return {flat[i]: float(flat[i + 1]) for i in range(0, len(flat), 2)}


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _bins_by_key(keys: Sequence[bytes], histograms: bytes) -> Waiting:
    """An entry's histogram groups (ingest.lua's `histograms`: JSON [[KEYS indexes], sum,
    [field, count, ...]]) as key -> the bins to add to it (one Pairs per group, "sum"
    included, shared by the group's keys)."""
    out: Waiting = {}
    for indexes, total, flat in orjson.loads(histograms) if histograms else ():
        delta = {HISTOGRAM_SUM_FIELD: float(total)}
        for i in range(0, len(flat), 2):
            delta[flat[i].encode()] = float(flat[i + 1])
        for index in indexes:
            out.setdefault(keys[index - 1], []).append(delta)
    return out


def _written_bins_by_key(keys: Sequence[bytes], histograms: bytes) -> Waiting:
    """The bins of an entry whose batch wrote them at once (ingest v3, in a rolling upgrade):
    space-separated groups n, n KEYS indexes, m, m pairs field, amount ("sum" first). Its
    "sums" (Redis's sums after the write) are not taken: with bins waiting for a fold, a
    hash's sum in Redis is not the sum the copy holds."""
    groups = histograms.split(b" ") if histograms else []
    out: Waiting = {}
    i = 0
    while i < len(groups):
        n = int(groups[i])
        m = int(groups[i + n + 1])
        first = i + n + 2
        delta = {groups[f]: float(groups[f + 1]) for f in range(first, first + 2 * m, 2)}
        for j in range(i + 1, i + n + 1):
            out.setdefault(keys[int(groups[j]) - 1], []).append(delta)
        i = first + 2 * m
    return out


def _waiting(fields: Sequence[bytes]) -> Waiting:
    """The bins a feed entry brings that its hashes do not hold until a fold."""
    entry = dict(zip(fields[::2], fields[1::2], strict=True))
    if b"sums" in entry:  # written at once (ingest v3)
        return {}
    return _bins_by_key(entry[b"keys"].split(b" "), entry[b"histograms"])


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Held:
    pairs: Pairs
    generation: int
    used: float


@dataclass
class _Sum:
    total: Pairs
    generation: int
    used: float


# One waiting entry's bins (not in the hashes until a fold): key -> the bins to add to it
Waiting = dict[bytes, list[Pairs]]


@dataclass
class _Shard:
    last_id: str = ""  # the newest feed entry this copy includes; "" none (read afresh)
    held: dict[bytes, _Held] = field(default_factory=dict)
    sums: dict[tuple[bytes, ...], _Sum] = field(default_factory=dict)
    folded: str = ""  # the newest entry whose bins the hashes hold, as the last call saw it
    # the entries after `folded`, oldest first: (id, its bins per key)
    waiting: list[tuple[tuple[int, int], Waiting]] = field(default_factory=list)

    def clear(self) -> None:
        self.last_id = ""
        self.folded = ""
        self.held.clear()
        self.sums.clear()
        self.waiting.clear()


class AnswerView:
    """The contents one answer reads: the cache's, and what its own call fetched where the
    cache could not keep it (a reply older than the copy, or a shard without a feed)."""

    def __init__(self, cache: BucketCache) -> None:
        self._cache = cache
        self.fetched: dict[int, dict[bytes, Pairs]] = {}

    def pairs(self, shard: int, key: bytes) -> Pairs:
        own = self.fetched.get(shard)
        if own is not None and key in own:
            return own[key]
        return self._cache.held_pairs(shard, key)

    def sum(self, shard: int, keys: Sequence[bytes]) -> Pairs:
        """Every name's values added over `keys` (a window's buckets, oldest first)."""
        cold, hot = keys[:-HOT_KEYS], keys[-HOT_KEYS:]
        total: Pairs = dict(self._cold_sum(shard, tuple(cold))) if cold else {}
        for key in hot:
            _add(total, self.pairs(shard, key))
        return total

    def _cold_sum(self, shard: int, keys: tuple[bytes, ...]) -> Pairs:
        own = self.fetched.get(shard)
        if own and any(key in own for key in keys):
            total: Pairs = {}
            for key in keys:
                _add(total, self.pairs(shard, key))
            return total
        return self._cache.memo_sum(shard, keys)


def _add(total: Pairs, pairs: Pairs) -> None:
    get = total.get
    for name, value in pairs.items():
        total[name] = get(name, 0.0) + value


class BucketCache:
    """The bucket contents one reader (an API replica) has read, per shard."""

    def __init__(self, shards: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._shards = [_Shard() for _ in range(shards)]
        self._clock = clock
        self._generation = 0
        self._drops = 0
        self._swept = clock()

    def last_id(self, shard: int) -> str:
        return self._shards[shard].last_id

    def missing(self, shard: int, keys: Iterable[bytes]) -> list[bytes]:
        """Those of `keys` the copy does not hold: the answer's call fetches them."""
        held = self._shards[shard].held
        return [key for key in dict.fromkeys(keys) if key not in held]

    def held_pairs(self, shard: int, key: bytes) -> Pairs:
        found = self._shards[shard].held.get(key)
        if found is None:
            return {}
        found.used = self._clock()
        return found.pairs

    @property
    def drops(self) -> int:
        """Counts the times the copy let keys go: a call that began before the last drop
        must check that the keys it did not fetch are still held."""
        return self._drops

    def holds(self, shard: int, key: bytes) -> bool:
        return key in self._shards[shard].held

    def _drop(self, state: _Shard) -> None:
        self._generation += 1
        self._drops += 1
        state.clear()

    @property
    def generation(self) -> int:
        """Changes whenever any content held changes: a result computed at the same
        generation is still exact."""
        return self._generation

    def apply(
        self,
        shard: int,
        changes: Sequence[Any],
        fetched: dict[bytes, Pairs],
        view: AnswerView,
    ) -> bool:
        """Take one call's CHANGES reply and FETCHed contents for `shard`; False when the copy
        was dropped (a reset) and the answer's keys must be fetched again."""
        status, head_raw, folded_raw, entries = changes
        head, folded = _text(head_raw), _text(folded_raw)
        state = self._shards[shard]
        # This call's own fetches serve its answer whatever another call does to the copy
        # meanwhile (drops it on a reset, or lets keys go).
        own = view.fetched.setdefault(shard, {})
        if status == b"none":  # no feed yet (an empty store): nothing can be kept
            own.update(fetched)
            if state.held or state.last_id:
                self._drop(state)
            return True
        if status == b"reset":
            self._drop(state)
            state.last_id, state.folded = head, folded
            state.waiting = [
                (_stream_id(entries[i].decode()), _waiting(entries[i + 1]))
                for i in range(0, len(entries), 2)
            ]
            complete = self._with_waiting(state, fetched, folded, head)
            own.update(complete)
            self._store(state, complete)
            return False
        if state.last_id and _stream_id(head) < _stream_id(state.last_id):
            # A call that ran before one already applied: older than the copy. Its fetches
            # serve its answer, with the entries that waited then (if the copy still has them).
            if state.folded and _stream_id(folded) < _stream_id(state.folded):
                return False
            own.update(self._with_waiting(state, fetched, folded, head))
            return True
        applied = _stream_id(state.last_id) if state.last_id else (0, 0)
        if entries or fetched:
            self._generation += 1  # what is stored below is newer than every kept result
        for i in range(0, len(entries), 2):
            entry_id = _stream_id(entries[i].decode())
            if entry_id > applied:  # not applied by a later call yet
                self._add_entry(state, entry_id, entries[i + 1])
        # Fetched by this call: as of `head` already, the entries above included.
        complete = self._with_waiting(state, fetched, folded, head)
        own.update(complete)
        self._store(state, complete)
        state.last_id = head
        if not state.folded or _stream_id(folded) > _stream_id(state.folded):
            state.folded = folded
            after = _stream_id(folded)
            state.waiting = [entry for entry in state.waiting if entry[0] > after]
        self._sweep(self._clock())
        return True

    def _with_waiting(
        self, state: _Shard, fetched: dict[bytes, Pairs], folded: str, head: str
    ) -> dict[bytes, Pairs]:
        """The fetched hashes with the bins of the entries after `folded` up to `head` (which
        their call read them without), as the feed says they are."""
        if not fetched or not state.waiting:
            return fetched
        low, high = _stream_id(folded), _stream_id(head)
        complete = dict(fetched)
        for entry_id, bins in state.waiting:
            if not low < entry_id <= high:
                continue
            for key, deltas in bins.items():
                pairs = complete.get(key)
                if pairs is None:
                    continue
                if pairs is fetched[key]:
                    pairs = complete[key] = dict(pairs)
                for delta in deltas:
                    _add(pairs, delta)
        return complete

    def _add_entry(self, state: _Shard, entry_id: tuple[int, int], fields: Sequence[bytes]) -> None:
        """Add one batch's counters and bins (ingest.lua's sections) to the keys held; its bins
        wait for a fold (kept in `waiting`) unless its batch wrote them at once."""
        entry = dict(zip(fields[::2], fields[1::2], strict=True))
        keys = entry[b"keys"].split(b" ")
        held = state.held
        generation = self._generation
        increments = entry[b"increments"].split(b" ") if entry[b"increments"] else []
        for i in range(0, len(increments), 3):
            found = held.get(keys[int(increments[i]) - 1])
            if found is not None:
                pairs = found.pairs
                name = increments[i + 1]
                pairs[name] = pairs.get(name, 0.0) + float(increments[i + 2])
                found.generation = generation
        written_at_once = b"sums" in entry  # ingest v3, before folding (rolling upgrades)
        read_bins = _written_bins_by_key if written_at_once else _bins_by_key
        bins = read_bins(keys, entry[b"histograms"])
        for key, deltas in bins.items():
            found = held.get(key)
            if found is not None:
                for delta in deltas:
                    _add(found.pairs, delta)
                found.generation = generation
        if bins and not written_at_once:
            state.waiting.append((entry_id, bins))

    def _store(self, state: _Shard, fetched: dict[bytes, Pairs]) -> None:
        now = self._clock()
        for key, pairs in fetched.items():
            state.held[key] = _Held(pairs, self._generation, now)

    def memo_sum(self, shard: int, keys: tuple[bytes, ...]) -> Pairs:
        """The sum over `keys`, kept while none of them changes (sealed buckets)."""
        state = self._shards[shard]
        now = self._clock()
        found = state.sums.get(keys)
        held = state.held
        if found is not None and all(
            key in held and held[key].generation <= found.generation for key in keys
        ):
            found.used = now
            return found.total
        total: Pairs = {}
        for key in keys:
            entry = held.get(key)
            if entry is not None:
                entry.used = now
                _add(total, entry.pairs)
        state.sums[keys] = _Sum(total, self._generation, now)
        return total

    def _sweep(self, now: float) -> None:
        """Let go of the keys and sums no answer used lately."""
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        self._drops += 1
        cutoff = now - UNUSED_S
        for state in self._shards:
            state.sums = {k: s for k, s in state.sums.items() if s.used >= cutoff}
            in_sums = {key for keys in state.sums for key in keys}
            state.held = {k: h for k, h in state.held.items() if h.used >= cutoff or k in in_sums}
