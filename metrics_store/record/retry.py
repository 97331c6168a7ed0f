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
import re
import time

import redis
from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError

from metrics_store.record.events import Event
from metrics_store.record.in_hand import Batch
from metrics_store.settings import Settings

# Tries of a batch whose content Redis refuses before it is dead-lettered.
BATCH_FAULT_ATTEMPTS = 3
# The ingest script's answer to a batch stamped too far from Redis's clock.
CLOCK_SKEW_REPLY = "CLOCKSKEW"
# Error codes of refusals that hit every batch alike. They may come as the reply's first word
# or, from inside a script, after its "-" in an "Error running script" message.
_STORE_WIDE: tuple[str, ...] = ("OOM", "NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING")
_STORE_WIDE += ("BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOSCRIPT", "MOVED", "ASK")
_STORE_WIDE_CODE = re.compile(r"(?:^|-)({})\b".format("|".join(_STORE_WIDE)))
_STORE_WIDE_CLASSES = (OutOfMemoryError, ReadOnlyError, NoScriptError)  # the code is parsed off
# A retry must start this long before the batch's id marker expires: one attempt's time.
_MARKER_MARGIN_S = 60.0


class Verdict(enum.Enum):
    OUTAGE = "outage"
    CLOCK_SKEW = "clock skew"
    BATCH_FAULT = "batch fault"


def verdict(exc: Exception) -> Verdict:
    """What a failed write says (any non-Redis error is a bug of ours: a batch fault)."""
    if not isinstance(exc, redis.RedisError):
        return Verdict.BATCH_FAULT
    if not isinstance(exc, redis.ResponseError) or isinstance(exc, _STORE_WIDE_CLASSES):
        return Verdict.OUTAGE  # no reply, or a refusal redis-py names by its class
    text = str(exc)
    if text.startswith(CLOCK_SKEW_REPLY):
        return Verdict.CLOCK_SKEW
    return Verdict.OUTAGE if _STORE_WIDE_CODE.search(text) else Verdict.BATCH_FAULT


def may_have_landed(exc: Exception) -> bool:
    """Whether the failed attempt may have run the script: its reply was lost, or replicas
    did not acknowledge what it wrote. A refusal reply means nothing was written."""
    return isinstance(exc, redis.RedisError) and not isinstance(exc, redis.ResponseError)


def note_attempt(batch: Batch, exc: Exception, now_s: float | None = None) -> None:
    if batch.maybe_landed_s is None and may_have_landed(exc):
        batch.maybe_landed_s = time.monotonic() if now_s is None else now_s


def past_marker_life(batch: Batch, settings: Settings, now_s: float | None = None) -> bool:
    """Whether a retry could count the batch twice: an attempt may have written it, and its
    id marker expires before this retry would be over."""
    if batch.maybe_landed_s is None:
        return False
    now_s = time.monotonic() if now_s is None else now_s
    margin_s = min(_MARKER_MARGIN_S, settings.batch_id_ttl_s / 10)
    return now_s - batch.maybe_landed_s >= settings.batch_id_ttl_s - margin_s


def accepted_by_clock(
    events: list[Event], node_now_s: float, redis_now_s: float, settings: Settings
) -> list[Event]:
    """The events Redis's clock (`redis_now_s`, from a CLOCKSKEW reply) will accept."""
    tolerance_s = settings.clock_skew_tolerance_s
    # Margins inside the script's bounds: Redis's clock moves on before the next call.
    margin_s = min(1.0, tolerance_s / 10)
    if abs(node_now_s - redis_now_s) > tolerance_s - margin_s:
        return []  # this node's clock is off: none of its stamps can be trusted
    low = redis_now_s - settings.retention_s + margin_s
    high = redis_now_s + tolerance_s - margin_s
    kept = [event for event in events if low <= event[1] <= high]
    # The clocks moved across a bound between two calls: never loop on it.
    return [] if len(kept) == len(events) else kept


def redis_now_of(reply: Exception) -> float:
    """Redis's clock as a CLOCKSKEW reply gives it."""
    return float(str(reply).split()[1])
