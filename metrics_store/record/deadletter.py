"""Batches Redis refused for their content, kept with the error so nothing is lost unseen.

A batch that the ingest script rejects for what it holds (not an outage, which is waited out)
is added to the capped stream `{p}:deadletter`: its events as JSON, the error, the node and
process that lost it. Once the cause is fixed, `metrics-store replay-deadletter` records the
events again through a collector and deletes each entry once its events are in Redis.

    letters = DeadLetters(client, settings)
    letters.add(events, "ERR ...")                 # the flusher, after the batch's last try
    for entry in letters.read(): ...               # entry.events, entry.error
    letters.replay(collector)                      # re-record, flush, delete each entry
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis

from metrics_store.errors import EventsLost
from metrics_store.record.events import Event
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings

log = logging.getLogger(__name__)

# Entries kept (approximately): enough for every batch of a long bad day, bounded all the same.
DEADLETTER_MAXLEN = 10_000
_READ_PAGE = 100


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    events: list[Event]
    error: str
    node: str


class Recorder(Protocol):
    """What replay needs of a collector: take events as recorded, and flush them."""

    def record_events(self, events: Sequence[Event]) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...


class DeadLetters:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._key = Keys(settings.key_prefix).deadletter
        self._node = settings.node

    def add(self, events: Sequence[Event], error: str) -> bool:
        """Keep a refused batch; False if Redis could not take even that (then only counted)."""
        fields: dict[Any, Any] = {
            "events": orjson.dumps(list(events)),
            "error": error,
            "node": self._node,
            "pid": str(os.getpid()),
        }
        try:
            self._client.xadd(self._key, fields, maxlen=DEADLETTER_MAXLEN, approximate=True)
            return True
        except Exception as exc:  # a cluster's own exceptions are not RedisErrors: any failure
            log.error("could not dead-letter %d events (%s): they are lost", len(events), exc)
            return False

    def read(self) -> Iterator[DeadLetter]:
        """Every entry, oldest first."""
        start = "-"
        while True:
            page: list[Any] = self._client.xrange(self._key, start, "+", count=_READ_PAGE) or []
            for entry_id, fields in page:
                yield _parse(entry_id, fields)
            if len(page) < _READ_PAGE:
                return
            start = "(" + _text(page[-1][0])

    def replay(self, collector: Recorder) -> tuple[int, int]:
        """Record every entry's events again, one entry at a time, and delete each entry once
        its events are settled: (events written, events lost again).

        An outage is waited out (flush() without a timeout). A batch Redis refuses again goes
        back to the stream as a new entry with the new error (the flusher does that), and its
        old entry is deleted, so no event is ever listed twice.
        """
        written = lost = 0
        for letter in list(self.read()):
            # A node's model availability is its state when it was reported, under its own
            # node name: replayed later, by another process, it would be neither.
            collector.record_events([event for event in letter.events if event[0] != "a"])
            try:
                collector.flush()
                written += len(letter.events)
            except EventsLost as exc:
                lost += exc.lost
            self._client.xdel(self._key, letter.entry_id)
        return written, lost


def _parse(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    events: list[Any] = [tuple(event) for event in orjson.loads(fields[b"events"])]
    return DeadLetter(
        _text(entry_id),
        events,  # tuples as the collector built them
        _text(fields.get(b"error", b"")),
        _text(fields.get(b"node", b"")),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
