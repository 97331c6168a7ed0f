"""Cumulative OTLP streams as deltas, with each stream's last points kept in Redis.

A cumulative point carries everything since its start; what to record is the difference from
the stream's point before. That point is kept in Redis (keys.py `otlp_stream`), with the one
before it, so that any replica can take a stream's next export, and a retried export finds its
own point there:

    no state                    the stream's first point: all of it is new
    same start, time and values a retry of the last point: its delta again (from `prev`), under
                                the same batch id, which the ingest script's marker makes a no-op
    older                       stale (a later point, already taken, includes it): nothing
    new start, or a value down  a restart of the stream: a reset, all of the point is new
    else                        point - last

A new state is claimed by compare-and-set (otlp_claim.lua): of two replicas taking the same
stream at once, one wins and the other decides again from what it finds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import OTLP_CLAIM, lua_script
from metrics_store.sources.otlp.convert import Bins
from metrics_store.sources.otlp.mapping import Placed

State = dict[str, Any]
# Rounds of compare-and-set before a contended point is refused (the exporter retries it).
CLAIM_ROUNDS = 4


@dataclass(frozen=True)
class Delta:
    """What one point adds, and the batch id that writes it once."""

    point: Placed
    bins: Bins
    batch_id: str


def _record(point: Placed) -> State:
    b = point.bins
    return {"s": point.start_ns, "t": point.time_ns, "c": b.count, "m": b.total,
            "b": {str(i): n for i, n in b.bins.items()}, "x": b.error}  # fmt: skip


def _minus(point: Placed, before: State | None) -> Bins:
    b = point.bins
    if before is None:
        return b
    bins = {i: n - before["b"].get(str(i), 0) for i, n in b.bins.items()}
    return Bins(
        count=b.count - before["c"],
        total=max(0.0, b.total - before["m"]),
        bins={i: n for i, n in bins.items() if n},
        error=b.error,
    )


def _went_down(point: Placed, last: State) -> bool:
    b = point.bins
    if b.count < last["c"] or b.total < last["m"]:
        return True
    return any(b.bins.get(int(i), 0) < n for i, n in last["b"].items())


@dataclass(frozen=True)
class Step:
    """A point's place in its stream: the new state to claim (None: the state stays), the
    point its delta is from (None: all of it is new), and whether it adds anything."""

    new: State | None
    before: State | None
    takes: bool = True


def decide(point: Placed, state: State | None) -> Step:
    new = _record(point)
    if state is None:
        return Step({"cur": new, "prev": None}, None)
    last, prev = state["cur"], state["prev"]
    if point.time_ns == last["t"] and point.start_ns == last["s"]:
        if new["c"] == last["c"] and new["b"] == last["b"]:
            return Step(None, prev)  # a retry: the same delta, under the same batch id
        return Step(None, None, takes=False)  # another point at the same instant: not taken
    if point.time_ns <= last["t"]:
        return Step(None, None, takes=False)
    if point.start_ns != last["s"] or _went_down(point, last):
        return Step({"cur": new, "prev": None}, None)
    return Step({"cur": new, "prev": last}, last)


def transition_id(point: Placed, before: State | None) -> str:
    """The same for every attempt at the same step of a stream: the batch's idempotency id."""
    parts = (point.stream, before["t"] if before else None, point.start_ns, point.time_ns)
    return "otlp-" + hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


class CumulativeStreams:
    """Turns cumulative points into deltas, claiming each stream's step in Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._claim = lua_script(OTLP_CLAIM)

    def deltas(self, points: Sequence[Placed]) -> tuple[list[Delta], int]:
        """The deltas of `points` (a stream at most once), and how many lost every claim."""
        pending = list(points)
        out: list[Delta] = []
        for _ in range(CLAIM_ROUNDS):
            if not pending:
                break
            pending = self._round(pending, out)
        return out, len(pending)

    def _round(self, points: list[Placed], out: list[Delta]) -> list[Placed]:
        """One read and one claim for every point; returns those another replica beat."""
        keys = [self._keys.otlp_stream(p.stream) for p in points]
        found: list[Any] = self._client.mget(keys)
        steps = [
            decide(point, orjson.loads(raw) if raw else None)
            for point, raw in zip(points, found, strict=True)
        ]
        claims = [n for n, step in enumerate(steps) if step.new is not None]
        lost: set[int] = set()
        if claims:
            args: list[Any] = [self._ttl_s]
            for n in claims:
                args += (found[n] or b"", orjson.dumps(steps[n].new))
            replies = self._claim.run(self._client, [keys[n] for n in claims], args)
            lost = {n for n, reply in zip(claims, replies, strict=True) if reply != 1}
        for n, (point, step) in enumerate(zip(points, steps, strict=True)):
            if step.takes and n not in lost:
                bins = _minus(point, step.before)
                out.append(Delta(point, bins, transition_id(point, step.before)))
        return [points[n] for n in sorted(lost)]
