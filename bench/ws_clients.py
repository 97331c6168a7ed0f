"""WebSocket clients for the live benchmark: many connections per process, each receipt timed.

A client process opens its connections (spread round-robin over the servers' URLs), says how
many it opened, records `time.time_ns()` for every message as its reader sees it, and on the
stop signal closes them and returns `{update timestamp: [receive ns, ...]}`. The clock is the
wall clock because the reference (publish) times are taken in another process on this host.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from websockets.asyncio.client import ClientConnection, connect

# Opening a thousand connections at once makes the servers' accept path the benchmark.
CONNECT_CONCURRENCY = 50
TIMESTAMP_FIELD = '"timestamp":"'


@dataclass
class ClientReport:
    """What one client process saw."""

    connections: int
    received: dict[str, list[int]] = field(default_factory=dict)  # timestamp -> receive ns
    messages: int = 0


def raise_fd_limit() -> None:
    """Every connection is a file descriptor; take the hard limit as the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def timestamp_of(message: str | bytes) -> str:
    """The update's `timestamp`, found without parsing the 4 KB of JSON around it."""
    text = message if isinstance(message, str) else message.decode()
    start = text.index(TIMESTAMP_FIELD) + len(TIMESTAMP_FIELD)
    return text[start : text.index('"', start)]


def client_process(
    urls: list[str], count: int, ready: Queue[int], stop: Event, out: Queue[ClientReport]
) -> None:
    """Process entry point (multiprocessing, spawn): run `count` clients until `stop` is set."""
    raise_fd_limit()
    out.put(asyncio.run(_run_clients(urls, count, ready, stop)))


async def _run_clients(urls: list[str], count: int, ready: Queue[int], stop: Event) -> ClientReport:
    received: dict[str, list[int]] = defaultdict(list)
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    sockets = await asyncio.gather(*(_open(urls[i % len(urls)], limit) for i in range(count)))
    readers = [asyncio.create_task(_read(ws, received)) for ws in sockets]
    ready.put(count)
    while not stop.is_set():  # a multiprocessing Event cannot be awaited; poll it
        await asyncio.sleep(0.1)
    for reader in readers:
        reader.cancel()
    await asyncio.wait(readers)
    await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets)), timeout=30)
    messages = sum(len(times) for times in received.values())
    return ClientReport(count, dict(received), messages)


async def _open(url: str, limit: asyncio.Semaphore) -> ClientConnection:
    async with limit:
        # No permessage-deflate: the figures are for the WebSocket fan-out itself, for the live
        # stream and the baseline alike. No keepalive pings: nothing but updates on the wire.
        return await connect(
            url, compression=None, ping_interval=None, max_size=2**20, open_timeout=60
        )


async def _read(ws: ClientConnection, received: dict[str, list[int]]) -> None:
    async for message in ws:
        now = time.time_ns()
        received[timestamp_of(message)].append(now)
