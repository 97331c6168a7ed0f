"""`metrics-store watch`: print the live stream, one line per update, reconnecting forever.

Reconnects with exponential backoff and full jitter, as the guide asks of every client: after
a server restart, a crowd of dashboards comes back spread out rather than all at once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

from metrics_store.backoff import Backoff

CONNECT_TIMEOUT_S = 5.0
# Refusals that retrying cannot fix: a missing or wrong token, a refused origin.
REFUSED_STATUSES = {401: "the server wants a valid --token (METRICS_API_TOKEN)", 403: "refused"}


def format_update(update: dict[str, Any]) -> str:
    """One line of an update: timestamp, total queries, current qps, cpu%, decisions."""
    queries = update.get("queries", {})
    rates = queries.get("queryRate") or [0.0]
    cpu = update.get("resources", {}).get("cpu", {}).get("percent", 0.0)
    decisions = update.get("routing", {}).get("accuracyMetrics", {}).get("totalDecisions", 0)
    return (
        f"{update.get('timestamp', '?')}  queries {queries.get('totalQueries', 0):>8}"
        f"  qps {rates[-1]:>8.2f}  cpu {cpu:>6.1f}%  decisions {decisions:>8}"
    )


def _say(text: str) -> None:
    print(f"metrics-store watch: {text}", file=sys.stderr, flush=True)


@dataclass
class Watcher:
    """Prints the updates of one URL, `count` of them in all (None: forever)."""

    url: str
    count: int | None = None
    out: TextIO = sys.stdout
    printed: int = 0
    # Sent as a header, never in the URL: the URL is printed, and proxies log it.
    token: str | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.count is not None and self.printed >= self.count

    async def watch_once(self) -> str:
        """One connection: print its updates until it ends or enough are printed; why it ended."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with connect(
            self.url, open_timeout=CONNECT_TIMEOUT_S, additional_headers=headers
        ) as websocket:
            _say(f"connected to {self.url}")
            async for message in websocket:
                print(format_update(orjson.loads(message)), file=self.out, flush=True)
                self.printed += 1
                if self.done:
                    break
            reason = websocket.close_reason or "no reason given"
            return f"the server closed the connection ({websocket.close_code}: {reason})"


async def watch(
    watcher: Watcher,
    max_backoff_s: float = 30.0,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> int:
    """Run `watcher`, reconnecting with backoff after each failure; the exit status."""
    backoff = Backoff(base_s=0.5, cap_s=max_backoff_s)
    _say(f"connecting to {watcher.url}")
    while True:
        before = watcher.printed
        try:
            reason = await watcher.watch_once()
        except InvalidURI as exc:
            _say(f"not a WebSocket URL: {exc}")
            return 2
        except InvalidStatus as exc:
            if (status := exc.response.status_code) in REFUSED_STATUSES:
                _say(f"{watcher.url}: HTTP {status}: {REFUSED_STATUSES[status]}")
                return 2
            reason = _describe(exc)
        except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
            reason = _describe(exc)
        if watcher.done:
            return 0
        if watcher.printed > before:
            backoff.reset()  # the connection worked: start the next wait small again
        delay = backoff.next_delay()
        _say(f"{watcher.url}: {reason}; reconnecting in {delay:.1f} s")
        await sleep(delay)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"cannot connect ({text})" if isinstance(exc, OSError) else text
