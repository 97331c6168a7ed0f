"""A parent with events still buffered forks three children that record: for tests/test_fork.py.

    python -m tests.fork_driver flush|exit|live|multiprocessing

The parent records while Redis holds every write (`CLIENT PAUSE WRITE`): its flusher can take
two batches at most, so at the fork most of its events sit in its buffer and none is written.
Each child records events of its own, then, by the mode:

- flush: flush() and exit through sys.exit (gunicorn's workers exit so);
- exit: exit through sys.exit without flushing: the exit flush writes them;
- live: live on without flushing until Redis holds them (the flusher wrote them), then leave
  through os._exit, which runs no exit hook;
- multiprocessing: a `fork` Process whose target returns without flushing (multiprocessing
  then leaves through os._exit, after its finalizers).

Every event's `tokens_generated` names its process: 0 for the parent, 1 to 3 for the children.
The driver exits 0 if every child did, once the parent's flush() returned.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from typing import cast

import redis

from metrics_store import get_metrics_collector, get_settings
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.keys import Keys
from tests.waiting import wait_until

PARENT = 0
CHILDREN = (1, 2, 3)
PARENT_EVENTS = 50
CHILD_EVENTS = 20
BATCH_MAX_EVENTS = 10  # METRICS_BATCH_MAX_EVENTS for the driver: see the module docstring
WAIT_S = 10.0
# The pause ends by UNPAUSE right after the forks, or by itself if the driver fails first.
PAUSE_MS = 10_000


def stored_by_process(client: redis.Redis, prefix: str) -> Counter[int]:
    """The stored query events of each process, by the tag in their `tokens_generated`."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(Keys(prefix).query_stream))
    return Counter(int(fields[b"tokens"]) for _, fields in entries)


def record(collector: MetricsCollector, tag: int, count: int) -> None:
    for _ in range(count):
        collector.record_query("Q2", 5.0, tag, 4.0)


def run_child(mode: str, tag: int) -> int:
    """A child's work: record, then flush, exit or live on by the mode; its exit status."""
    collector = get_metrics_collector()  # the parent's, inherited
    record(collector, tag, CHILD_EVENTS)
    if mode == "flush":
        collector.flush(timeout_s=WAIT_S)
        return 0 if collector.written_events == CHILD_EVENTS else 1
    if mode == "live":
        settings = get_settings()
        with redis.Redis.from_url(settings.redis.url) as client:
            wait_until(
                lambda: (
                    stored_by_process(client, settings.key_prefix)[tag] == CHILD_EVENTS
                    and collector.written_events == CHILD_EVENTS
                ),
                WAIT_S,
                f"child {tag}'s events written by its flusher",
            )
        os._exit(0)  # no exit hook: what is stored, the flusher wrote
    return 0  # exit, multiprocessing: the exit flush writes them


def fork_child(mode: str, tag: int) -> Callable[[], int | None]:
    """Fork one child (in it: run, then exit normally); what waits for its exit status."""
    if mode == "multiprocessing":
        process = multiprocessing.get_context("fork").Process(target=_process_main, args=(tag,))
        process.start()

        def exit_code() -> int | None:
            process.join()
            return process.exitcode

        return exit_code
    pid = os.fork()
    if pid == 0:
        sys.exit(run_child(mode, tag))
    return lambda: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _process_main(tag: int) -> None:
    sys.exit(run_child("multiprocessing", tag))


def main(mode: str) -> int:
    # Python 3.12+ warns on any fork of a process with threads (the parent's flusher): forking
    # such a process is what this driver is for.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    collector = get_metrics_collector()
    collector.flush(timeout_s=WAIT_S)  # its flusher connected and idle
    admin = redis.Redis.from_url(get_settings().redis.url)
    admin.client_pause(PAUSE_MS, all=False)  # writes only
    record(collector, PARENT, PARENT_EVENTS)
    print(f"parent pending at fork: {collector.pending_events}", flush=True)
    children = [fork_child(mode, tag) for tag in CHILDREN]
    admin.client_unpause()
    failed = sum(exit_code() != 0 for exit_code in children)
    collector.flush(timeout_s=WAIT_S)
    print(f"parent written: {collector.written_events}, children failed: {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
