"""The end count: each (process, sequence number) stored once, twice, or missing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from metrics_store.redis.keys import Keys

PAGE = 10_000


@dataclass
class ProcessFigures:
    """One collector process: what it says, and what the stream holds of it."""

    node: str
    recorded: int
    written: int
    reported_lost: int
    flush: str
    started_at: float  # epoch s of its first event; event n was recorded n / rate s later
    stored: int = 0
    duplicates: int = 0
    missing: int = 0

    @property
    def unreported(self) -> int:
        """Missing events beyond those the process was told it lost: silent loss."""
        return max(0, self.missing - self.reported_lost)

    @property
    def lost_but_stored(self) -> int:
        """Events reported lost that are stored all the same (over-reporting, not loss)."""
        return max(0, self.reported_lost - self.missing)

    @property
    def acknowledged_lost(self) -> int:
        """Events counted as written that the store does not hold."""
        return max(0, self.written - (self.stored - self.duplicates))


def stream_entries(client: redis.Redis, stream: str) -> Iterator[dict[bytes, bytes]]:
    """Every entry of `stream`, a page at a time."""
    start = "-"
    while True:
        page: list[Any] = client.xrange(stream, start, "+", count=PAGE) or []
        for _, fields in page:
            yield fields
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0].decode()


def count_ids(client: redis.Redis, prefix: str) -> Counter[tuple[str, int]]:
    """How many times each (node, sequence number) is stored in the query stream."""
    stream = Keys(prefix).query_stream
    return Counter(
        (fields[b"node"].decode(), int(fields[b"tokens"]))
        for fields in stream_entries(client, stream)
    )


def tally(process: ProcessFigures, ids: Counter[tuple[str, int]]) -> ProcessFigures:
    """Fill in what the stream holds of `process`."""
    for seq in range(process.recorded):
        times = ids.get((process.node, seq), 0)
        process.stored += times
        process.duplicates += max(0, times - 1)
        process.missing += times == 0
    return process


def table(processes: list[ProcessFigures]) -> str:
    """Recorded, stored and reported-lost figures side by side, one row per process."""
    head = ("process", "recorded", "written", "stored", "duplicates", "missing",
            "reported lost", "unreported", "ack'd lost", "flush")  # fmt: skip
    rows = [
        (p.node, p.recorded, p.written, p.stored, p.duplicates, p.missing, p.reported_lost,
         p.unreported, p.acknowledged_lost, p.flush)
        for p in processes
    ]  # fmt: skip
    total = tuple(sum(getattr(p, f) for p in processes) for f in (
        "recorded", "written", "stored", "duplicates", "missing", "reported_lost", "unreported",
        "acknowledged_lost"))  # fmt: skip
    rows.append(("all", *total, ""))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True)) for r in [head, *rows]
    ]
    return "\n".join(lines)


def missing_ranges(process: ProcessFigures, ids: Counter[tuple[str, int]]) -> list[range]:
    """The runs of consecutive sequence numbers of `process` that the stream lacks."""
    runs: list[range] = []
    start: int | None = None
    for seq in range(process.recorded + 1):
        absent = seq < process.recorded and (process.node, seq) not in ids
        if absent and start is None:
            start = seq
        elif not absent and start is not None:
            runs.append(range(start, seq))
            start = None
    return runs
