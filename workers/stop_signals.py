"""SIGINT and SIGTERM as a request to stop: an Event the main loop checks, never an exception.

A KeyboardInterrupt can land anywhere, in the middle of an enqueue or a flush; an Event is
checked where stopping is safe, so the process finishes what it was doing, flushes, and
exits 0.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals() -> threading.Event:
    """An Event set by SIGINT or SIGTERM from now on (call it from the main thread)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop
