"""`python -m tests.skewed_clock OFFSET_S ARGS...`: `metrics-store ARGS...` in a process whose
wall clock is off by OFFSET_S seconds (a node whose NTP is broken), while Redis's is right.

Only `time.time` and `time.time_ns` move, as on a real machine with a wrong clock: monotonic
timers (sleeps, timeouts, the sampler's schedule) still run at the true rate.
"""

from __future__ import annotations

import runpy
import sys
import time


def shift_wall_clock(offset_s: float) -> None:
    """Make this process's wall clock run `offset_s` seconds off the true one."""
    true_time, true_time_ns = time.time, time.time_ns
    offset_ns = int(offset_s * 1e9)
    time.time = lambda: true_time() + offset_s
    time.time_ns = lambda: true_time_ns() + offset_ns


if __name__ == "__main__":
    shift_wall_clock(float(sys.argv[1]))
    sys.argv = ["metrics-store", *sys.argv[2:]]
    runpy.run_module("workers.cli", run_name="__main__", alter_sys=True)
