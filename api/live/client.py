"""One WebSocket client of the live stream: the latest update at once, then each relayed one.

Two tasks per client. The sender waits on the client's slot and sends what it holds; the
reader reads whatever the client sends and ignores it, except what no dashboard sends: a
binary frame (closed with 1003) or a text over a few KB (1009). Whichever ends first ends
the other, so a slow, dead or misbehaving client only ever costs its own connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from api.live.hub import ClientHub
from api.live.slot import Frame, LatestSlot

log = logging.getLogger(__name__)

GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
MESSAGE_TOO_BIG = 1009
CLOSE_REASONS = {
    GOING_AWAY: "server shutting down",
    UNSUPPORTED_DATA: "binary messages are not accepted",
    MESSAGE_TOO_BIG: "message too big",
}

# Clients have nothing to say to the stream; this is room for a ping or a subscription
# message, and small enough that a misbehaving client cannot make the server buffer much.
MAX_CLIENT_MESSAGE_BYTES = 4096
# A send that cannot complete for this long means the client is gone or stuck for good:
# it is dropped, while the others were never waiting on it.
SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0

# What a broken connection raises, depending on the server and the moment.
DISCONNECTED = (WebSocketDisconnect, OSError, RuntimeError)

Latest = Callable[[], Awaitable[Frame | None]]


async def serve_client(websocket: WebSocket, hub: ClientHub, latest: Latest) -> None:
    """Serve one client until it leaves, misbehaves, or the server shuts down."""
    await websocket.accept()
    # Join before reading `latest`: an update published in between reaches the slot by the
    # relay, and the slot drops whichever of the two copies comes second.
    slot = hub.join()
    try:
        first = await latest()
        if first is not None:
            slot.offer(first)
        code = await _first_to_finish(_send_updates(websocket, slot), _read_and_ignore(websocket))
        if code is not None:
            await _close(websocket, code)
    finally:
        hub.leave(slot)


async def _send_updates(websocket: WebSocket, slot: LatestSlot) -> int | None:
    """Send each frame the slot yields; the close code once it is closed, None if cut off."""
    while (frame := await slot.take()) is not None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await websocket.send_text(frame.text)
        except TimeoutError:
            log.info("live: dropping a client stuck for %.0f s on one update", SEND_TIMEOUT_S)
            return None
        except DISCONNECTED:
            return None
    return slot.close_code


async def _read_and_ignore(websocket: WebSocket) -> int | None:
    """Read the client's messages; the close code for one it must not send, None on leaving."""
    while True:
        try:
            message = await websocket.receive()
        except DISCONNECTED:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("bytes") is not None:
            return UNSUPPORTED_DATA
        if len((message.get("text") or "").encode()) > MAX_CLIENT_MESSAGE_BYTES:
            return MESSAGE_TOO_BIG


async def _first_to_finish(*coros: Coroutine[Any, Any, int | None]) -> int | None:
    """Run the coroutines until one returns; cancel the rest and return its result."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        # asyncio.wait, not gather: if this task is itself being cancelled, gather would
        # re-raise the children's bare CancelledError in place of the one aimed at this task,
        # and an anyio cancel scope around the app (TestClient) would not recognise it.
        await asyncio.wait(tasks)


async def _close(websocket: WebSocket, code: int) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(code, CLOSE_REASONS.get(code))
    except (TimeoutError, *DISCONNECTED):
        pass  # the client is gone already; nothing left to tell it
