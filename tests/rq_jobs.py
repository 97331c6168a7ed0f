"""Jobs an rq worker runs in the tests (imported by the worker process by name)."""

from __future__ import annotations

import time
from pathlib import Path


def hold(release_path: str, timeout_s: float = 30.0) -> str:
    """Stay running until `release_path` exists (or `timeout_s` passes)."""
    deadline = time.monotonic() + timeout_s
    while not Path(release_path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "released"
