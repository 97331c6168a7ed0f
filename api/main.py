"""The ASGI app: `api.main:app`, built by create_app()."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.errors import install_error_handlers
from api.limits import RequestLimits
from api.live import LiveStream
from api.routes import router
from metrics_store.clock import Clock
from metrics_store.reader import MetricsReader
from metrics_store.redis_client import async_client
from metrics_store.settings import Settings, get_settings


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """A new API app; settings default to the environment's, the clock to the wall clock."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        client = async_client(resolved)
        reader = MetricsReader(client, resolved, clock)
        live = LiveStream(client, reader, resolved, clock)
        app.state.settings = resolved
        app.state.reader = reader
        app.state.live = live
        # Nothing here touches Redis: the app starts (and answers 503) while Redis is away,
        # and the live loops connect by themselves once it is back.
        live.start()
        try:
            yield
        finally:
            await live.stop()
            await client.aclose()

    app = FastAPI(
        title="metrics-store",
        summary="Live telemetry of an LLM-serving backend, from Redis.",
        description="REST endpoints below; the live stream is the WebSocket "
        "`/api/metrics/ws` (one `metrics_update` a second; see docs/live-stream.md).",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(RequestLimits)
    app.include_router(router)
    mount_dashboard(app)
    return app


STATIC_DIR = Path(__file__).parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """The MetricsPage at `/`, its files under `/static/`; nothing catches `/api/*`."""

    # A route for "/" and a mount for "/static", rather than StaticFiles at "/": a catch-all
    # mount would answer /api paths that match no route (405s with the wrong Allow header).
    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


app = create_app()
