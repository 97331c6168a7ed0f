"""Checks on every recorded value. Each check raises InvalidMetric (a ValueError) naming the field.

The checks run on the caller's thread, so the common case (a plain int or float in range) takes
the first, cheapest branch.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from metrics_store.errors import InvalidMetric

# Bounds that no real measurement reaches: they keep one absurd value from turning a window's
# sums into infinities. A day in milliseconds, and a billion tokens or score points.
MAX_MS = 86_400_000.0
MAX_COUNT = 1_000_000_000
MAX_SCORE = 1_000_000_000.0


def check_number(field: str, value: object, maximum: float) -> float:
    """A finite int or float in [0, maximum]; bools and numeric strings are refused."""
    kind = type(value)
    if (kind is not float and kind is not int) and (
        isinstance(value, bool) or not isinstance(value, (int, float))
    ):
        raise InvalidMetric(field, f"must be a number, got {kind.__name__}")
    number = float(value)  # type: ignore[arg-type]
    if not 0.0 <= number <= maximum:
        if math.isnan(number):
            raise InvalidMetric(field, "must be a number, got NaN")
        raise InvalidMetric(field, f"must be between 0 and {maximum:g}, got {value!r}")
    return number


def check_count(field: str, value: object) -> int:
    """An int in [0, MAX_COUNT]; bools and floats are refused."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidMetric(field, f"must be an int, got {type(value).__name__}")
    count = int(value)
    if not 0 <= count <= MAX_COUNT:
        raise InvalidMetric(field, f"must be between 0 and {MAX_COUNT}, got {count}")
    return count


def check_flag(field: str, value: object) -> bool:
    """A real bool."""
    if value is not True and value is not False:
        raise InvalidMetric(field, f"must be a bool, got {type(value).__name__}")
    return value


def check_name(field: str, value: object, allowed: Collection[str]) -> str:
    """One of the configured names, exactly (case included)."""
    if type(value) is not str or value not in allowed:
        raise InvalidMetric(field, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value
