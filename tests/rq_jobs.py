"""Jobs an rq worker runs in the tests (imported by the worker process by name)."""

from __future__ import annotations

from pathlib import Path

from tests.waiting import wait_until


def hold(release_path: str, timeout_s: float = 30.0) -> str:
    """Stay running until `release_path` exists; fails after `timeout_s`."""
    wait_until(Path(release_path).exists, timeout_s, f"{release_path} to exist")
    return "released"
