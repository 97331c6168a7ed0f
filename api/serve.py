"""Serve the app with uvicorn, closing live clients with 1001 (going away) on shutdown.

Uvicorn closes every open WebSocket with 1012 (service restart) before the app's lifespan
shutdown runs, so the app alone cannot say "going away". This server asks the live stream
to close its clients first, then shuts down as uvicorn does.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from api.live.client import GOING_AWAY, MAX_CLIENT_MESSAGE_BYTES


class ApiServer(uvicorn.Server):
    """uvicorn.Server with a first shutdown step: the live clients get 1001."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the live clients with 1001, then shut down as uvicorn does."""
        live = getattr(self._app.state, "live", None)
        if live is not None:
            await live.close_clients(GOING_AWAY)
        await super().shutdown(sockets)


def serve(host: str, port: int) -> None:
    """Run `api.main:app` on host:port until SIGINT or SIGTERM."""
    from api.main import app

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # Frames over this are refused by the protocol layer (1009) before they are buffered.
        ws_max_size=MAX_CLIENT_MESSAGE_BYTES,
        # permessage-deflate would compress the same update once per client each second:
        # CPU growing with the clients, to save ~3 KB a second per dashboard.
        ws_per_message_deflate=False,
    )
    ApiServer(config, app).run()
