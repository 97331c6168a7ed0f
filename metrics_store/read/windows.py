"""?window= values: "1800", "5m", "1h", "24h", "7d" as seconds, bounded by the history kept."""

from __future__ import annotations

import re

from metrics_store.errors import InvalidWindow

UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
WINDOW_PATTERN = re.compile(r"0*([0-9]{1,9})([smhd]?)")
MAX_SHOWN_CHARS = 40


def parse_window(text: str, bucket_s: int, history_s: int) -> int:
    """The window in seconds, rounded up to whole buckets of `bucket_s`.

    Raises InvalidWindow for anything but a positive number with an optional unit (s, m, h,
    d), and for a window longer than `history_s`, the history the store keeps.
    """
    shown = text[:MAX_SHOWN_CHARS]
    match = WINDOW_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidWindow(shown, "must be seconds or a number with s, m, h or d (e.g. 5m, 24h)")
    seconds = int(match.group(1)) * UNIT_S[match.group(2)]
    if seconds <= 0:
        raise InvalidWindow(shown, "must be longer than 0 seconds")
    if seconds > history_s:
        raise InvalidWindow(shown, f"is longer than the {history_s} s of history kept")
    return -(-seconds // bucket_s) * bucket_s


def window_schema_pattern(history_s: int) -> str:
    """A regex for exactly the windows `parse_window` accepts under `history_s` (for OpenAPI)."""
    choices = [f"{_one_to(history_s // UNIT_S[unit])}{unit}" for unit in ("", "s", "m", "h", "d")]
    return "^0*(?:" + "|".join(choices) + ")$"


def _one_to(limit: int) -> str:
    """A regex for the decimal numbers 1 to `limit`, without leading zeros."""
    if limit < 1:
        return "(?!)"  # nothing
    digits = str(limit)
    parts = ["[1-9]" + f"[0-9]{{{k - 1}}}" for k in range(1, len(digits))]
    for i, char in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(char) > low:
            rest = len(digits) - i - 1
            parts.append(f"{digits[:i]}[{low}-{int(char) - 1}][0-9]{{{rest}}}")
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"
