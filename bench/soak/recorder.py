"""One soak collector process: `python -m bench.soak.recorder SECONDS RATE FLUSH_TIMEOUT_S`.

Records one query every 1/RATE s for SECONDS, with its sequence number as `tokens_generated`
(the node name, METRICS_NODE, tells the processes apart), then flushes and prints one JSON
line: what it recorded, what its collector says it wrote and dropped, and what flush() said.
"""

from __future__ import annotations

import json
import sys
import time

from metrics_store import get_metrics_collector
from metrics_store.errors import EventsLost


def record(seconds: float, rate: float) -> int:
    """Record at a steady rate for `seconds`; how many were recorded (event n at n / rate s)."""
    collector = get_metrics_collector()
    started = time.monotonic()
    recorded = 0
    while time.monotonic() - started < seconds:
        collector.record_query("Q3", 10.0 + recorded % 7, recorded, 4.0)
        recorded += 1
        time.sleep(max(0.0, started + recorded / rate - time.monotonic()))
    return recorded


def settle(flush_timeout_s: float) -> dict[str, object]:
    """flush() once for everything recorded: what it raised, if anything."""
    collector = get_metrics_collector()
    try:
        collector.flush(timeout_s=flush_timeout_s)
    except EventsLost as lost:
        return {"flush": "EventsLost", "flush_lost": lost.lost, "flush_message": str(lost)}
    except TimeoutError as exc:
        return {"flush": "TimeoutError", "flush_lost": 0, "flush_message": str(exc)}
    return {"flush": "ok", "flush_lost": 0, "flush_message": ""}


def main() -> None:
    seconds, rate, flush_timeout_s = (float(arg) for arg in sys.argv[1:4])
    get_metrics_collector()  # connected before the clock starts
    started_at = time.time()
    recorded = record(seconds, rate)
    outcome = settle(flush_timeout_s)
    collector = get_metrics_collector()
    report = {
        "recorded": recorded,
        "started_at": started_at,
        "written": collector.written_events,
        "dropped": collector.dropped_events,
        "pending": collector.pending_events,
        **outcome,
    }
    print(json.dumps(report), flush=True)
    collector.close()


if __name__ == "__main__":
    main()
