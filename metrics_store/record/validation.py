"""Checks on every recorded value. Each check raises InvalidMetric (a ValueError) naming the field.

The checks run on the caller's thread, so the common case (a plain int or float in range) takes
the first, cheapest branch.
"""

from __future__ import annotations

from collections.abc import Collection

from metrics_store.errors import InvalidMetric
from metrics_store.record.events import Event

# Bounds that no real measurement reaches: they keep one absurd value from turning a window's
# sums into infinities. A day in milliseconds, and a billion tokens or score points.
MAX_MS = 86_400_000.0
MAX_COUNT = 1_000_000_000
MAX_SCORE = 1_000_000_000.0
# A refused value is quoted in its error message up to this length.
MAX_SHOWN_CHARS = 80


def check_number(field: str, value: object, maximum: float) -> float:
    """A finite int or float in [0, maximum]; bools and numeric strings are refused."""
    if type(value) is float or type(value) is int:
        number: int | float = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = _exact(value)
    else:
        raise InvalidMetric(field, f"must be a number, got {type(value).__name__}")
    # Compared before converting: float() of a huge int raises OverflowError, not ValueError.
    if not 0 <= number <= maximum:
        if number != number:
            raise InvalidMetric(field, "must be a number, got NaN")
        raise InvalidMetric(field, f"must be between 0 and {maximum:g}, got {_shown(number)}")
    return float(number) + 0.0  # + 0.0 stores -0.0 as 0.0


def check_count(field: str, value: object) -> int:
    """An int in [0, MAX_COUNT]; bools and floats are refused."""
    if type(value) is int:
        count = value
    elif isinstance(value, int) and not isinstance(value, bool):
        count = int.__int__(value)
    else:
        raise InvalidMetric(field, f"must be an int, got {type(value).__name__}")
    if not 0 <= count <= MAX_COUNT:
        raise InvalidMetric(field, f"must be between 0 and {MAX_COUNT}, got {_shown(count)}")
    return count


def _exact(value: int | float) -> int | float:
    """The plain int or float inside a subclass, read without calling the subclass's code.

    An IntEnum or a float subclass is a number; but its own __le__, __float__ or __repr__
    could say anything, so the checks and the stored value use the base type's.
    """
    return float.__float__(value) if isinstance(value, float) else int.__int__(value)


def check_flag(field: str, value: object) -> bool:
    """A real bool."""
    if value is not True and value is not False:
        raise InvalidMetric(field, f"must be a bool, got {type(value).__name__}")
    return value


def check_name(field: str, value: object, allowed: Collection[str]) -> str:
    """One of the configured names, exactly (case included).

    A str subclass (a StrEnum member, say) counts by its plain text, read through str's own
    method rather than the subclass's, and is stored as a plain str.
    """
    if type(value) is not str:
        if not isinstance(value, str):
            raise InvalidMetric(field, f"must be a str, got {type(value).__name__}")
        value = str.__str__(value)
    if value not in allowed:
        raise InvalidMetric(field, f"must be one of {', '.join(allowed)}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    """A refused value for an error message: never thousands of characters, never user code.

    The type's own repr is called (not a subclass's), and ints too long to print (Python refuses
    str() past 4300 digits) are described by their size instead.
    """
    if isinstance(value, str):
        text = str.__repr__(value)
        return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    return int.__repr__(value) if isinstance(value, int) else type(value).__name__


def check_event(event: object, tiers: Collection[str], complexities: Collection[str]) -> Event:
    """An event tuple as a collector built it (replayed from the dead-letter stream), checked
    field by field as the calls check theirs; its stamp is kept."""
    if not isinstance(event, tuple) or not event or event[0] not in _EVENT_FIELDS:
        raise InvalidMetric(
            "event", f"must be a query, routing or availability event, got {_shown(event)}"
        )
    kind = event[0]
    if len(event) != _EVENT_FIELDS[kind]:
        raise InvalidMetric("event", f"a {kind!r} event has {_EVENT_FIELDS[kind]} fields")
    stamp = check_number("ts", event[1], float("inf"))
    if kind == "q":
        _, _, tier, latency, tokens, generation, error, ttft, queue = event
        return (
            "q", stamp, check_name("tier", tier, tiers),
            check_number("latency_ms", latency, MAX_MS), check_count("tokens_generated", tokens),
            check_number("generation_time_ms", generation, MAX_MS), check_flag("is_error", error),
            None if ttft is None else check_number("ttft_ms", ttft, MAX_MS),
            None if queue is None else check_number("queue_time_ms", queue, MAX_MS),
        )  # fmt: skip
    if kind == "r":
        _, _, complexity, tier, score, decision, fallback = event
        return (
            "r", stamp, check_name("complexity", complexity, complexities),
            check_name("tier", tier, tiers), check_number("score", score, MAX_SCORE),
            check_number("decision_time_ms", decision, MAX_MS), check_flag("is_fallback", fallback),
        )  # fmt: skip
    _, _, tier, available, total = event
    return ("a", stamp, check_name("tier", tier, tiers), check_count("available", available),
            check_count("total", total))  # fmt: skip


# Fields of each kind of event tuple (record/events.py).
_EVENT_FIELDS = {"q": 9, "r": 7, "a": 5}
