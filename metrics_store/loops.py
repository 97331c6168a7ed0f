"""Run forever, back off, log once per streak, count the errors: the one helper of every loop.

Every long-running loop of the store (the collector's flusher and heartbeat, the API's ticker,
relay and replica heartbeat, the sampler, the job worker) runs its body through a `LoopGuard`.
A failure of any kind (a Redis outage or a bug nobody foresaw) is counted, logged once per
streak of failures (with its traceback when it is not an outage), waited out with jittered
backoff, and the loop carries on. A loop that dies quietly would leave a process that looks
healthy and does nothing; this one shows its failures instead, in `GET /api/metrics/health`
(each process publishes `PROCESS_LOOPS` with its heartbeat).

    guard = LoopGuard("sampler", base_s=0.5, cap_s=5.0)
    run_forever(guard, sample_once_and_return_pause_s, stop_event)
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import redis

from metrics_store.backoff import Backoff
from metrics_store.errors import StoreUnavailable

log = logging.getLogger(__name__)

# Unique per process: two containers can share a node name and both run as pid 1.
PROCESS_INSTANCE = secrets.token_hex(3)
# An error message is cut here: the health answer stays small whatever an exception says.
MAX_ERROR_CHARS = 300
OUTAGES = (redis.ConnectionError, redis.TimeoutError, OSError, StoreUnavailable)


@dataclass
class LoopStats:
    """What one loop has failed so far: the totals since start and the current streak."""

    errors: int = 0
    streak: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


class LoopRegistry:
    """The stats of every loop of this process, by loop name (thread-safe)."""

    def __init__(self) -> None:
        self._stats: dict[str, LoopStats] = {}
        self._roles: set[str] = set()
        self._lock = threading.Lock()

    def renew_lock(self) -> None:
        self._lock = threading.Lock()

    def add_role(self, role: str) -> None:
        with self._lock:
            self._roles.add(role)

    def roles(self) -> list[str]:
        with self._lock:
            return sorted(self._roles)

    def register(self, name: str) -> LoopStats:
        with self._lock:
            return self._stats.setdefault(name, LoopStats())

    def failed(self, stats: LoopStats, exc: BaseException, at: float) -> None:
        message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        with self._lock:
            stats.errors += 1
            stats.streak += 1
            stats.last_error, stats.last_error_at = message, at

    def succeeded(self, stats: LoopStats) -> None:
        with self._lock:
            stats.streak = 0

    def snapshot(self) -> dict[str, dict[str, object]]:
        """A copy of every loop's stats, ready to serialise."""
        with self._lock:
            return {name: asdict(stats) for name, stats in sorted(self._stats.items())}


PROCESS_LOOPS = LoopRegistry()
# A fork copies the lock as it stood: held for ever in the child if another thread had it.
os.register_at_fork(after_in_child=PROCESS_LOOPS.renew_lock)


def process_id(node: str) -> str:
    """This process's name in the health record: node, pid and a per-start suffix."""
    return f"{node}:{os.getpid()}:{PROCESS_INSTANCE}"


class LoopGuard:
    """One loop's failure handling: count, log once per streak, and say how long to back off.

    >>> guard = LoopGuard("relay")
    >>> delay_s = guard.failed(exc)   # after a failed pass
    >>> guard.succeeded()             # after a good one
    """

    def __init__(
        self,
        name: str,
        *,
        base_s: float = 0.1,
        cap_s: float = 5.0,
        registry: LoopRegistry = PROCESS_LOOPS,
    ) -> None:
        self.name = name
        self._registry = registry
        self._stats = registry.register(name)
        self._backoff = Backoff(base_s=base_s, cap_s=cap_s)
        self._logger = logging.getLogger(f"metrics_store.loop.{name}")

    @property
    def failing(self) -> bool:
        return self._stats.streak > 0

    def failed(self, exc: BaseException) -> float:
        """Count `exc`; log it if it starts a streak; the jittered delay before the next pass."""
        if self._stats.streak == 0:
            if isinstance(exc, OUTAGES):
                self._logger.warning("%s: Redis unavailable (%s); retrying", self.name, exc)
            else:
                self._logger.error("%s failed; it carries on", self.name, exc_info=exc)
        self._registry.failed(self._stats, exc, time.time())
        return self._backoff.next_delay()

    def succeeded(self) -> None:
        if self._stats.streak:
            self._logger.info(
                "%s: working again after %d failed passes", self.name, self._stats.streak
            )
            self._registry.succeeded(self._stats)
        self._backoff.reset()

    def call(self, step: Callable[[], object]) -> bool:
        """Run `step` once under the guard (no waiting); True if it succeeded."""
        try:
            step()
        except Exception as exc:
            self.failed(exc)
            return False
        self.succeeded()
        return True


def run_forever(
    guard: LoopGuard,
    step: Callable[[], float],
    stop: threading.Event,
    after_failure: Callable[[], None] | None = None,
) -> None:
    """Call `step` until `stop` is set; it returns the pause (s) before its next call.

    `after_failure` puts the loop's state back in order after a failed pass (for example,
    the flusher keeps the batch it was writing for a retry).
    """
    while not stop.is_set():
        try:
            pause_s = step()
        except Exception as exc:
            pause_s = guard.failed(exc)
            if after_failure is not None:
                try:
                    after_failure()
                except Exception as cleanup_exc:  # its failure must not end the loop either
                    guard.failed(cleanup_exc)
        else:
            guard.succeeded()
        if pause_s > 0:
            stop.wait(pause_s)


async def run_forever_async(
    guard: LoopGuard,
    step: Callable[[], Awaitable[float]],
    after_failure: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Await `step` until the task is cancelled; it returns the pause (s) before the next."""
    while True:
        reraise_if_cancelled()
        try:
            pause_s = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reraise_if_cancelled()
            pause_s = guard.failed(exc)
            if after_failure is not None:
                try:
                    await after_failure()
                except Exception as cleanup_exc:  # its failure must not end the loop either
                    reraise_if_cancelled()
                    guard.failed(cleanup_exc)
        else:
            guard.succeeded()
        reraise_if_cancelled()
        await asyncio.sleep(pause_s)


def reraise_if_cancelled() -> None:
    """Raise CancelledError if this task has been asked to stop.

    redis-py's asyncio client can swallow a cancellation that lands mid-command: it closes its
    connection and either raises a ConnectionError or returns as if nothing happened. A loop
    that goes on after either would stay "cancelling" for ever, and shutdown would wait for it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
