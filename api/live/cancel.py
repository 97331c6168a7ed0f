"""Keep a cancelled loop cancelled, whatever the library it was waiting in did with the news.

redis-py's asyncio client can swallow a cancellation that lands mid-command: it closes its
connection and either raises a ConnectionError or returns as if nothing happened. A loop that
goes on after either would stay "cancelling" for ever, and shutdown would wait for it. Each
loop calls `reraise_if_cancelled()` after every Redis call, whatever its outcome.
"""

from __future__ import annotations

import asyncio


def reraise_if_cancelled() -> None:
    """Raise CancelledError if this task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
