"""Cumulative OTLP streams as deltas, with each stream's last point kept in Redis.

A cumulative point carries everything since its start; what to record is the difference from
the stream's point before. That point is kept in Redis (keys.py `otlp_stream`), so that any
replica can take a stream's next export:

    no state                    the stream's first point: all of it is new
    same start, time and values a retry of the last point, recorded already: nothing
    older, or the same instant  stale (a later point, already taken, includes it): nothing
    new start, or a value down  a restart of the stream: a reset, all of the point is new
    else                        point - last

The new states are claimed in the very ingest call that writes the deltas (ingest.lua
`claims`): the call writes nothing unless every state is still the one its deltas were taken
from, so a state moves on exactly when its step's data land, whichever replica sends it. Of two
replicas taking the same stream at once, one call wins; the other decides again from the
states its refused call found, and finds its points taken. A retried export re-asserts its
states (no data): on a store that waits for replicas, its WAIT then covers the first write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from metrics_store.record.batch import Claim
from metrics_store.redis.keys import Keys
from metrics_store.sources.otlp.convert import Bins
from metrics_store.sources.otlp.mapping import Placed

# Rounds of claims before a contended export is refused (the exporter retries it).
CLAIM_ROUNDS = 4


@dataclass(frozen=True)
class Last:
    """A stream's last point taken, as its state holds it."""

    start_ns: int
    time_ns: int
    count: int
    total: float
    bins: dict[int, int]


@dataclass(frozen=True)
class Delta:
    """What one point adds."""

    point: Placed
    bins: Bins


@dataclass(frozen=True)
class Step:
    """A point's place in its stream: what it adds (None: nothing), and whether its state is
    claimed (False: the stream's state stays, as a stale point leaves it)."""

    adds: Bins | None
    claims: bool = True


# A state is "<token> <payload>": the token (a digest of the payload) is all ingest.lua
# compares, so a claim carries 16 characters of the state it read, not the state.
def encode_state(point: Placed) -> str:
    b = point.bins
    payload = orjson.dumps(
        [point.start_ns, point.time_ns, b.count, b.total, list(b.bins), list(b.bins.values())]
    )
    return f"{state_token(payload)} {payload.decode()}"


def state_token(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


def decode_state(raw: bytes) -> tuple[str, Last]:
    """(its token, the point it holds)."""
    if raw.startswith(b"{"):
        return _decode_untokened(raw)
    token, payload = raw.split(b" ", 1)
    start_ns, time_ns, count, total, indexes, counts = orjson.loads(payload)
    return token.decode(), Last(
        start_ns, time_ns, count, total, dict(zip(indexes, counts, strict=True))
    )


def _decode_untokened(raw: bytes) -> tuple[str, Last]:
    """A state written before states had tokens ({"cur": ..., "prev": ...}, JSON with no
    space): its token, as ingest.lua reads one, is the whole text; the stream goes on exactly."""
    cur = orjson.loads(raw)["cur"]
    bins = {int(index): count for index, count in cur["b"].items()}
    return raw.decode(), Last(cur["s"], cur["t"], cur["c"], cur["m"], bins)


def _minus(point: Placed, last: Last) -> Bins | None:
    """point - last, or None where a value went down (a restart the start did not show)."""
    b = point.bins
    if b.count < last.count or b.total < last.total or not last.bins.keys() <= b.bins.keys():
        return None
    before = last.bins
    added: dict[int, int] = {}
    for index, count in b.bins.items():
        grown = count - before.get(index, 0)
        if grown < 0:
            return None
        if grown:
            added[index] = grown
    return Bins(b.count - last.count, max(0.0, b.total - last.total), added, b.error)


def decide(point: Placed, last: Last | None) -> Step:
    if last is None:
        return Step(point.bins)
    if point.time_ns == last.time_ns and point.start_ns == last.start_ns:
        if point.bins.count == last.count and point.bins.bins == last.bins:
            return Step(None)  # a retry, recorded already: its state re-asserted
        return Step(None, claims=False)  # another point at the same instant: not taken
    if point.time_ns <= last.time_ns:
        return Step(None, claims=False)
    if point.start_ns != last.start_ns:
        return Step(point.bins)
    grown = _minus(point, last)
    return Step(point.bins if grown is None else grown)


# Writes the deltas with the claims in one call: None once written, else the states found
# (key -> raw state, b"" for none) of the claims another writer got to first.
Write = Callable[[list[Delta], list[Claim]], Mapping[str, bytes] | None]


class CumulativeStreams:
    """Turns cumulative points into deltas, their states claimed as the deltas are written."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def take(self, points: Sequence[Placed], keys: Keys, write: Write) -> int:
        """Write the deltas of `points` (a stream at most once, all on `keys`' shard) through
        `write`; returns how many were not written: other writers won every round."""
        names = [keys.otlp_stream(p.stream) for p in points]
        read: list[Any] = self._client.mget(names)  # bytes, or None for no state
        found: dict[str, bytes | None] = dict(zip(names, read, strict=True))
        for _ in range(CLAIM_ROUNDS):
            deltas, claims = _steps(points, names, found)
            if not claims:
                return 0
            lost = write(deltas, claims)
            if lost is None:
                return 0
            found.update(lost)
        return len(points)


def _steps(
    points: Sequence[Placed], names: Sequence[str], found: Mapping[str, bytes | None]
) -> tuple[list[Delta], list[Claim]]:
    """Every point's delta, and the claims that write them once."""
    deltas: list[Delta] = []
    claims: list[Claim] = []
    for point, name in zip(points, names, strict=True):
        raw = found[name]
        token, last = decode_state(raw) if raw else ("", None)
        step = decide(point, last)
        if step.claims:
            claims.append(Claim(name, token, encode_state(point)))
        if step.adds is not None:
            deltas.append(Delta(point, step.adds))
    return deltas, claims
