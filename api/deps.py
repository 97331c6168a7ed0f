"""Route dependencies: settings, reader and live stream, kept on app.state by the lifespan.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in its
thread pool, a hop that cost more than the rest of a request's Python work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from starlette.requests import HTTPConnection

from api.live import LiveStream
from metrics_store.read.reader import MetricsReader
from metrics_store.settings import Settings


async def get_reader(request: Request) -> MetricsReader:
    reader: MetricsReader = request.app.state.reader
    return reader


async def get_app_settings(connection: HTTPConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


async def get_live(websocket: WebSocket) -> LiveStream:
    live: LiveStream = websocket.app.state.live
    return live


ReaderDep = Annotated[MetricsReader, Depends(get_reader)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
LiveDep = Annotated[LiveStream, Depends(get_live)]
