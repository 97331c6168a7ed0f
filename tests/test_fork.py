"""The collector in forked children: each child's events written once, the parent's once.

A parent with events still in its buffer forks three children (tests/fork_driver.py), as
gunicorn --preload, Celery's prefork pool, rq and multiprocessing do; each child records and
then flushes, exits without flushing, or lives on without flushing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import redis

from metrics_store.loops import PROCESS_LOOPS
from tests.fork_driver import (
    BATCH_MAX_EVENTS,
    CHILD_EVENTS,
    CHILDREN,
    PARENT,
    PARENT_EVENTS,
    stored_by_process,
)
from tests.processes import child_env
from tests.waiting import wait_until

EVERY_PROCESS_ONCE = {PARENT: PARENT_EVENTS, **{child: CHILD_EVENTS for child in CHILDREN}}


def run_driver(redis_url: str, prefix: str, mode: str) -> str:
    env = child_env(
        redis_url,
        prefix,
        METRICS_NODE="forking-node",
        METRICS_BATCH_MAX_EVENTS=str(BATCH_MAX_EVENTS),
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.fork_driver", mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("mode", ["flush", "exit", "live", "multiprocessing"])
def test_forked_children_write_their_events_once_and_the_parent_its_own(
    redis_url: str, prefix: str, mode: str
) -> None:
    output = run_driver(redis_url, prefix, mode)

    # Redis held the parent's writes until after the forks: every event was still its own.
    assert f"parent pending at fork: {PARENT_EVENTS}" in output
    with redis.Redis.from_url(redis_url) as client:
        assert stored_by_process(client, prefix) == EVERY_PROCESS_ONCE


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_a_thread_holds_the_loop_registry_is_not_stuck_on_it() -> None:
    # The flusher's loop guards take the process-wide registry's lock on every heartbeat; a
    # fork at that instant must not leave the child's new flusher waiting for it for ever.
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with PROCESS_LOOPS._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:  # the child: never back into pytest
            try:
                PROCESS_LOOPS.register("forked-child")  # takes the lock
            finally:
                os._exit(0)
    finally:
        release.set()
        holder.join()
    statuses: list[int] = []

    def exited() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        statuses.append(status)
        return done == pid

    try:
        wait_until(exited, 10.0, "the forked child to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    assert os.waitstatus_to_exitcode(statuses[-1]) == 0
