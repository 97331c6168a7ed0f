"""The collector in a forked child works there as in its parent, and flushes at its exit.

gunicorn `--preload`, Celery's prefork pool, rq's work horse and `multiprocessing` fork a
process that may already hold the process-wide collector. The child gets a copy of the
collector without its flusher thread, copies of the parent's sockets and buffered events, and
every lock as it stood at that instant: held for ever if another thread had it. So each
collector starts over in the child (`renew_after_fork`): an empty buffer (the parent's events
stay the parent's to write, never twice), new locks, a Redis client of its own and a new
flusher thread, started in the fork hook as the parent's was at construction.

At exit: `atexit` closes the process-wide collector (writing what is left) in the main process
and in children that leave through `sys.exit` or the end of the program (gunicorn's workers).
`multiprocessing`'s children leave through `os._exit`, which skips atexit, once they have run
`multiprocessing.util`'s finalizers: the collector is closed by one of those too. Children that
leave through a bare `os._exit` (rq's work horse; Celery's pool, through billiard's own
finalizers) get no exit hook at all: their flusher writes within `flush_interval_s` while they
live, and whatever they record last needs a `flush()` before they go.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import redis

from metrics_store.redis.topology import sync_client
from metrics_store.settings import Settings

log = logging.getLogger("metrics_store.record.collector")

# Finalizers of priority >= 0 run before a multiprocessing child waits for its own children.
CLOSE_PRIORITY = 10


class Forkable(Protocol):
    """What a collector offers its forked children."""

    def renew_after_fork(self) -> None: ...

    def close(self, timeout_s: float | None = ...) -> None: ...


T = TypeVar("T", bound=Forkable)
_followed: weakref.WeakSet[Forkable] = weakref.WeakSet()


class ProcessWide(Generic[T]):
    """One instance per process: made on first use, closed at exit, renewed in forked children.

    >>> collectors = ProcessWide(MetricsCollector)   # at module level: it lives for ever
    >>> collector = collectors.get()
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._instance: T | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._renew_lock)

    def get(self) -> T:
        """The instance, made now if there is none."""
        with self._lock:
            if self._instance is None:
                self._instance = self._factory()
                close_at_exit(self._instance)
            return self._instance

    def reset(self, factory: Callable[[], T] | None = None) -> None:
        """Close the instance; the next get() makes a new one (or `factory` makes it now)."""
        with self._lock:
            if self._instance is not None:
                self._instance.close()
            self._instance = factory() if factory else None

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork


def follow_forks(collector: Forkable) -> None:
    """Renew `collector` in every child forked from now on, as long as it lives."""
    _followed.add(collector)


def close_at_exit(collector: Forkable) -> None:
    """Close `collector` at a normal exit of this process and of the children it forks."""
    atexit.register(collector.close)
    _close_at_multiprocessing_exit(collector)  # this process may be a multiprocessing child
    # A multiprocessing child starts with no finalizer at all; its after-fork callbacks run
    # after that clean slate, and the registration lives on into its own children.
    multiprocessing.util.register_after_fork(collector, _close_at_multiprocessing_exit)


def client_for_child(settings: Settings, inherited: redis.Redis) -> redis.Redis:
    """A client of the child's own, or if it cannot be made now, the inherited one."""
    try:
        return sync_client(settings)
    except Exception:  # a cluster client reads the slot map at once, and the cluster is away
        # The inherited client's pools notice the new process and open connections of their own.
        log.warning("a forked child keeps its parent's Redis client", exc_info=True)
        return inherited


def _close_at_multiprocessing_exit(collector: Forkable) -> None:
    multiprocessing.util.Finalize(None, collector.close, exitpriority=CLOSE_PRIORITY)


def _renew_in_child() -> None:
    for collector in list(_followed):
        try:
            collector.renew_after_fork()
        except Exception:  # the others must still be renewed
            log.exception("a collector could not start over in a forked child")


os.register_at_fork(after_in_child=_renew_in_child)
