"""Timestamps as the API writes them: ISO-8601 UTC, whole seconds, with a Z."""

from __future__ import annotations

import time
from functools import lru_cache


@lru_cache(maxsize=4096)
def _format(whole_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole_s))


def iso_utc(epoch_s: float) -> str:
    """The second holding `epoch_s`; cached, since a chart asks for the same 18 every request."""
    return _format(int(epoch_s // 1))
