"""Timestamps as the API writes them: ISO-8601 UTC, whole seconds, with a Z."""

from __future__ import annotations

import time


def iso_utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))
