"""Stop a child process tree: ask politely, wait a bounded time, kill as the last resort.

The one helper for it: `metrics-store up` stops its children with it, in order; the private
redis-server and the tests' child processes use it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0


def stop_process_tree(
    process: subprocess.Popen[bytes],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    request_stop: Callable[[], None] | None = None,
    name: str | None = None,
) -> int:
    """Stop `process` and wait for it; its exit status.

    `request_stop` asks it to stop (default: SIGTERM to the process alone, so it can stop its
    own children in its own order). If it has not exited within `timeout_s`, SIGKILL goes to
    its whole process group when it leads one (a child started with start_new_session=True),
    else to the process.
    """
    if process.poll() is not None:
        return process.returncode
    (request_stop or process.terminate)()  # Popen ignores a process that already exited
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning(
            "%s (pid %d) did not stop within %g s; killing it",
            name or "child process",
            process.pid,
            timeout_s,
        )
    kill_process_tree(process)
    return process.wait()


def kill_process_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's group if it leads one, else the process (a crash, no goodbye)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # it exited since poll()
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()


class StartedInWith:
    """`with thing:` starts it and stops it after: for anything with start() and stop()."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
