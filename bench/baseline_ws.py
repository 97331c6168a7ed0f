"""The live benchmark's baseline: a bare Starlette WebSocket broadcast fed by Redis pub/sub.

Each message on BENCH_CHANNEL is decoded once and sent to every client of this process with a
plain `await ws.send_text` in a loop: no slots, no per-client tasks, no first update, nothing
to compute. What the live stream does on top of this is what the benchmark measures.

    REDIS_URL=redis://... BENCH_CHANNEL=bench:bare uvicorn bench.baseline_ws:app --port P
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CLIENTS: set[WebSocket] = set()


async def broadcast(text: str) -> None:
    for websocket in list(CLIENTS):
        try:
            await websocket.send_text(text)
        except (WebSocketDisconnect, OSError, RuntimeError):
            CLIENTS.discard(websocket)


async def relay(client: aioredis.Redis, channel: str) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    async for message in pubsub.listen():
        if message["type"] == "message":
            await broadcast(message["data"].decode())


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    CLIENTS.add(websocket)
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # clients send nothing; read only to notice them leaving
    finally:
        CLIENTS.discard(websocket)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    task = asyncio.create_task(relay(client, os.environ["BENCH_CHANNEL"]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.aclose()


app = Starlette(
    routes=[Route("/health", health), WebSocketRoute("/ws", endpoint)], lifespan=lifespan
)
