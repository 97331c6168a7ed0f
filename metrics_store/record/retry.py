"""What a failed write says about its batch, and so what the flusher does next.

- An **outage** says nothing against the batch: the connection failed, a failover is under
  way, or Redis refuses every batch alike for now (out of memory, too few replicas, a replica
  that is read-only, still loading, busy with a script, a cluster reshaping, a script cache
  flushed). The batch waits with backoff, for as long as it takes, and loses nothing, unless
  a lost reply may have written it and its id marker would expire before the next try.
- A **clock skew** reply: some events lie too far from Redis's clock. They are set aside
  (counted as refused) and the rest is sent again at once.
- A **batch fault**: Redis refused this batch's content. After a few tries it goes to the
  dead-letter stream, counted as lost, so one poisoned batch cannot stall the flusher.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

from metrics_store.clock import Clock
from metrics_store.loops import LoopGuard
from metrics_store.record.batch import EncodedBatch
from metrics_store.record.deadletter import DeadLetters
from metrics_store.record.events import Event
from metrics_store.record.in_hand import (
    DEAD_LETTER,
    PARTIAL,
    UNCONFIRMED,
    Batch,
    BatchesInHand,
)
from metrics_store.record.writer import BatchWriter
from metrics_store.redis.replica_ack import ReplicasBehind
from metrics_store.settings import Settings

log = logging.getLogger("metrics_store.record.collector")

# Tries of a batch whose content Redis refuses before it is dead-lettered.
BATCH_FAULT_ATTEMPTS = 3
# The ingest script's answer to a batch stamped too far from Redis's clock.
CLOCK_SKEW_REPLY = "CLOCKSKEW"
# Error codes of refusals that hit every batch alike. They may come as the reply's first word
# or, from inside a script, after its "-" in an "Error running script" message.
# (MISCONF: Redis cannot persist, e.g. a full disk; NOPERM, NOAUTH, WRONGPASS: the ACL or the
# password changed: every batch alike, until an operator acts.)
_STORE_WIDE: tuple[str, ...] = ("OOM", "NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING")
_STORE_WIDE += ("BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT", "MOVED", "ASK", "MISCONF")
_STORE_WIDE += ("NOPERM", "NOAUTH", "WRONGPASS")
_STORE_WIDE_CODE = re.compile(r"(?:^|-)({})\b".format("|".join(_STORE_WIDE)))
# The ACL refusing a command inside a script comes without a code (Redis 7).
_STORE_WIDE_TEXT = ("can't run this command",)
# Replies redis-py turns into classes of their own, taking the code off the message.
_STORE_WIDE_CLASSES = (
    OutOfMemoryError,
    ReadOnlyError,
    NoScriptError,
    NoPermissionError,
    ClusterDownError,  # and MasterDownError
    TryAgainError,
    AskError,  # and MovedError
)
# A retry must start this long before the batch's id marker expires: one attempt's time.
_MARKER_MARGIN_S = 60.0


class Verdict(enum.Enum):
    OUTAGE = "outage"
    CLOCK_SKEW = "clock skew"
    BATCH_FAULT = "batch fault"


def verdict(exc: Exception) -> Verdict:
    """What a failed write says (any non-Redis error, or an argument redis-py cannot send, is
    a fault of the batch or of our code)."""
    if not isinstance(exc, redis.RedisError) or isinstance(exc, redis.DataError):
        return Verdict.BATCH_FAULT
    if not isinstance(exc, redis.ResponseError) or isinstance(exc, _STORE_WIDE_CLASSES):
        return Verdict.OUTAGE  # no reply, or a refusal redis-py names by its class
    text = str(exc)
    if text.startswith(CLOCK_SKEW_REPLY):
        return Verdict.CLOCK_SKEW
    if _STORE_WIDE_CODE.search(text) or any(words in text for words in _STORE_WIDE_TEXT):
        return Verdict.OUTAGE
    return Verdict.BATCH_FAULT


def may_have_landed(exc: Exception) -> bool:
    """Whether the failed attempt may have run the script: its reply was lost, or replicas
    did not acknowledge what it wrote. A refusal reply means nothing was written."""
    if isinstance(exc, (redis.ResponseError, redis.DataError)):
        return False  # a reply refusing the call, or nothing sent at all
    return isinstance(exc, redis.RedisError)


def failed_inside_the_script(exc: Exception) -> bool:
    """Whether the script was running when it failed (a command of it refused, or a Lua
    error), rather than refused before it began: Redis names the script's line then."""
    return isinstance(exc, redis.ResponseError) and "@user_script" in str(exc)


def note_attempt(batch: Batch, exc: Exception, now_s: float | None = None) -> None:
    """Remember when the batch's id marker was last surely written: the first attempt that
    may have run the script, or the latest that ran it for sure (replicas behind: the script
    wrote the batch, or found and renewed its marker)."""
    batch.ran_partway = batch.ran_partway or failed_inside_the_script(exc)
    now_s = time.monotonic() if now_s is None else now_s
    if isinstance(exc, ReplicasBehind) or (batch.maybe_landed_s is None and may_have_landed(exc)):
        batch.maybe_landed_s = now_s


def past_marker_life(batch: Batch, settings: Settings, now_s: float | None = None) -> bool:
    """Whether a retry could count the batch twice: an attempt may have written it, and its
    id marker expires before this retry would be over."""
    if batch.maybe_landed_s is None:
        return False
    now_s = time.monotonic() if now_s is None else now_s
    margin_s = min(_MARKER_MARGIN_S, settings.recording.batch_id_ttl_s / 10)
    return now_s - batch.maybe_landed_s >= settings.recording.batch_id_ttl_s - margin_s


def accepted_by_clock(
    events: list[Event], node_now_s: float, redis_now_s: float, settings: Settings
) -> list[Event]:
    """The events Redis's clock (`redis_now_s`, from a CLOCKSKEW reply) will accept."""
    tolerance_s = settings.recording.clock_skew_tolerance_s
    # Margins inside the script's bounds: Redis's clock moves on before the next call.
    margin_s = min(1.0, tolerance_s / 10)
    if abs(node_now_s - redis_now_s) > tolerance_s - margin_s:
        return []  # this node's clock is off: none of its stamps can be trusted
    low = redis_now_s - settings.retention.retention_s + margin_s
    high = redis_now_s + tolerance_s - margin_s
    kept = [event for event in events if low <= event[1] <= high]
    # The clocks moved across a bound between two calls: never loop on it.
    return [] if len(kept) == len(events) else kept


def redis_now_of(reply: Exception) -> float:
    """Redis's clock as a CLOCKSKEW reply gives it."""
    return float(str(reply).split()[1])


class Retrier:
    """Retries one batch until Redis takes it, or settles it as lost (counted, and told to
    the flush() behind it)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        writer: BatchWriter,
        hand: BatchesInHand,
        guard: LoopGuard,
        encode: Callable[[Batch], EncodedBatch],
        stopping: threading.Event,
        dead_letters: DeadLetters,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._writer = writer
        self._hand = hand
        self._guard = guard
        self._encode = encode
        self._stopping = stopping
        self._dead_letters = dead_letters

    def until_done(self, batch: Batch, failure: redis.RedisError | None = None) -> bool:
        """Retry the batch until Redis takes it, or it is lost for good (counted); `failure`
        is how its first attempt (sent by the flusher itself) failed.

        False if the collector started closing first: the batch is left in hand.
        """
        while True:
            if failure is not None:
                delay_s = self._judge(batch, failure)
                if delay_s is None:
                    return True
                if delay_s and self._stopping.wait(delay_s):
                    return False
            if past_marker_life(batch, self._settings):
                self._give_up(batch, "unconfirmed, and its id marker would expire before a retry")
                return True
            try:
                reply = self._writer.write(self._encode(batch))
            except redis.RedisError as exc:
                failure = exc
                continue
            self._settle_written(batch, reply)
            return True

    def _judge(self, batch: Batch, exc: redis.RedisError) -> float | None:
        """What a failed attempt says: seconds to wait before the next (0: at once), or None
        when the batch is settled (lost: dead-lettered, or counted)."""
        kind = verdict(exc)
        if kind is Verdict.CLOCK_SKEW:
            self._set_aside_skewed(batch, redis_now_of(exc))
            return 0.0  # the rest goes at once: nothing was written, Redis is fine
        if self._settled_by_fault(batch, exc, kind):
            return None
        return self._guard.failed(exc)

    def _settled_by_fault(self, batch: Batch, exc: Exception, kind: Verdict) -> bool:
        """Count a fault of the batch's own; True once it has been tried enough and is lost."""
        note_attempt(batch, exc)
        if kind is not Verdict.BATCH_FAULT:
            return False
        batch.faults += 1
        if batch.faults < BATCH_FAULT_ATTEMPTS:
            return False
        self.dead_letter(batch, exc)
        return True

    def _settle_written(self, batch: Batch, reply: object) -> None:
        self._guard.succeeded()
        if reply == -1 and batch.ran_partway:
            # Its marker was there after the script failed partway through an earlier
            # attempt (Redis does not roll a script back): part of it is stored.
            self._give_up(batch, "Redis refused it partway through, after writing part", PARTIAL)
        else:
            self._hand.written(batch)

    def dead_letter(self, batch: Batch, exc: Exception) -> None:
        """The batch's events go, with the error, to the dead-letter stream; counted lost.

        A batch that an attempt may have written is only counted lost: a replay of it could
        count it twice.
        """
        error = f"{type(exc).__name__}: {exc}"
        count = len(batch.events)
        reason = DEAD_LETTER
        try:
            if batch.maybe_landed_s is not None:
                reason = UNCONFIRMED
                log.error("%d events counted lost: maybe written, then failed (%s)", count, error)
            else:
                log.error("a batch failed for good (%s); %d events dead-lettered", error, count)
                self._dead_letters.add(batch.events, error)
        finally:
            self._hand.lose(batch, reason)  # whatever the dead-letter write did

    def _give_up(self, batch: Batch, why: str, reason: str = UNCONFIRMED) -> None:
        log.error("%d events counted lost: %s", len(batch.events), why)
        self._hand.lose(batch, reason)

    def _set_aside_skewed(self, batch: Batch, redis_now_s: float) -> None:
        """Keep the events Redis's clock accepts; count the others as refused, in this batch."""
        before = self._hand.counters.refused
        kept = accepted_by_clock(batch.events, self._clock.now(), redis_now_s, self._settings)
        refused = self._hand.set_aside(batch, kept)
        if _worth_logging(before, refused):
            log.warning(
                "%d events refused so far: this node's clock is more than %g s off Redis's "
                "(check NTP), or they were older than retention",
                self._hand.counters.refused,
                self._settings.recording.clock_skew_tolerance_s,
            )


def _worth_logging(before: int, added: int) -> bool:
    """Log the first refusal, then each time the total passes a power of ten."""
    after = before + added
    return before == 0 or len(str(after)) > len(str(before))
