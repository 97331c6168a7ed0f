"""One way to wait for something another process does: poll until it holds, or fail.

For the tests and bench/ only: it lives outside the installed packages (metrics_store, api,
workers), which never wait like this."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

T = TypeVar("T")

# A server on its way up or down answers with these: the check is asked again.
PASSING_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def wait_until(
    check: Callable[[], object],
    timeout_s: float = 15.0,
    what: str = "the condition",
    *,
    interval_s: float = 0.05,
    passing: tuple[type[BaseException], ...] = PASSING_ERRORS,
) -> float:
    """Poll `check` until it is true; the seconds it took. AssertionError on timeout.

    An exception of a `passing` type counts as "not yet"."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except passing:
            pass
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def wait_for(
    fetch: Callable[[], T],
    accept: Callable[[T], object],
    timeout_s: float = 15.0,
    what: str = "the condition",
    *,
    passing: tuple[type[BaseException], ...] = PASSING_ERRORS,
) -> T:
    """Fetch until `accept` holds for what came back; that value.

    AssertionError on timeout, naming the last value fetched."""
    found: list[T] = []

    def accepted() -> bool:
        found[:] = [fetch()]
        return bool(accept(found[0]))

    try:
        wait_until(accepted, timeout_s, what, passing=passing)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last: {found[0] if found else 'nothing'}") from None
    return found[0]


async def wait_until_async(
    check: Callable[[], Awaitable[object]],
    timeout_s: float = 15.0,
    what: str = "the condition",
    *,
    interval_s: float = 0.05,
    passing: tuple[type[BaseException], ...] = PASSING_ERRORS,
) -> None:
    """wait_until for a coroutine check, polled on the running event loop."""
    started = time.monotonic()
    while True:
        try:
            if await check():
                return
        except passing:
            pass
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)
