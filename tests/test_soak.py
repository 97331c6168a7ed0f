"""The fault soak, short: three collector processes record while Redis is killed, paused,
starved of memory, cut off and (on Sentinel) failed over; every event is then stored exactly
once or counted as lost by its process. `make soak` runs the long version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent  # bench/ is not installed: run from the checkout
# Two minutes of recording on each topology (the CI budget: each test takes about three
# minutes with its start and its final flush; the whole suite keeps well inside CI's 90).
SOAK_MINUTES = "2"
# On Sentinel a batch counts as written once one of the two replicas acknowledged it: a
# forced failover then drops what the old primary took between the promotion of one replica
# and the re-pointing of the other, and the collectors must write it again (record/replay.py,
# docs/reliability.md).
SENTINEL_ACKS = "1"


def soak(*args: str) -> dict[str, Any]:
    """Run `python -m bench.soak` with `args`; its exit status and SOAK-RESULT line."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", SOAK_MINUTES, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("SOAK-RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("SOAK-RESULT "))
    result["returncode"] = done.returncode
    result["output"] = done.stdout
    return result


def assert_nothing_lost_silently(result: dict[str, Any]) -> None:
    assert result["returncode"] == 0, result["output"][-4000:]
    assert result["passed"] is True
    assert sum(result["faults"].values()) >= 5  # a fault every 10-20 s for two minutes
    for process in result["processes"]:
        assert process["recorded"] > 0
        assert process["duplicates"] == 0
        assert process["unreported"] == 0
        assert process["stored"] + process["reported_lost"] == process["recorded"]


@pytest.mark.timeout(600)
def test_soak_on_single_redis_stores_every_event_once_or_reports_it_lost() -> None:
    result = soak("--topology", "single", "--seed", "11")
    assert_nothing_lost_silently(result)
    assert result["options"]["acks"] == 0


@pytest.mark.timeout(600)
def test_soak_on_sentinel_loses_no_acknowledged_event() -> None:
    result = soak("--topology", "sentinel", "--acks", SENTINEL_ACKS, "--seed", "11")
    assert_nothing_lost_silently(result)
    for process in result["processes"]:
        assert process["acknowledged_lost"] == 0
        assert process["written"] == process["stored"]
