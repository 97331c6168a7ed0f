"""The ASGI app: `api.main:app`, built by create_app() on first use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.errors import install_error_handlers
from api.limits import RequestLimits
from api.live import LiveStream
from api.otlp import close_receiver, otlp_router
from api.prometheus import router as prometheus_router
from api.routes import live_router, router
from api.security import install_cors, require_token
from metrics_store.clock import Clock
from metrics_store.read.reader import MetricsReader
from metrics_store.redis.topology import async_client
from metrics_store.settings import Settings, get_settings
from metrics_store.slo.definitions import Objective
from metrics_store.slo.files import read_objectives_file
from metrics_store.slo.store import SharedObjectives


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """A new API app; settings default to the environment's, the clock to the wall clock."""
    # Read here, not in the lifespan: CORS and the token's OpenAPI scheme shape the app itself.
    resolved = settings or get_settings()
    app = FastAPI(
        title="metrics-store",
        summary="Live telemetry of an LLM-serving backend, from Redis.",
        description="REST endpoints below; the live stream is the WebSocket "
        "`/api/metrics/ws` (one `metrics_update` a second; see docs/live-stream.md).",
        lifespan=_lifespan(resolved, clock, _objectives_file(resolved)),
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.settings = resolved
    install_error_handlers(app)
    app.add_middleware(RequestLimits)
    install_cors(app, resolved)
    # The dashboard page and its files stay public; they hold no data.
    guard = [Depends(require_token)] if resolved.api.token is not None else []
    app.include_router(router, dependencies=guard)
    app.include_router(prometheus_router, dependencies=guard)
    app.include_router(otlp_router, dependencies=guard)
    app.include_router(live_router)
    mount_dashboard(app)
    return app


def _objectives_file(settings: Settings) -> list[Objective] | None:
    """METRICS_SLO_FILE's objectives, read at once: a bad file stops the start, in one line."""
    return None if settings.slo.file is None else read_objectives_file(settings.slo.file, settings)


def _lifespan(
    settings: Settings, clock: Clock | None, from_file: list[Objective] | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's Redis client, reader and live stream, from start-up to shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = async_client(settings)
        objectives = SharedObjectives(client, settings, from_file)
        reader = MetricsReader(client, settings, clock, objectives)
        live = LiveStream(client, reader, settings, clock)
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
            close_receiver(app)

    return lifespan


STATIC_DIR = Path(__file__).parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    """The MetricsPage at `/`, its files under `/static/`; nothing catches `/api/*`."""

    # A route for "/" and a mount for "/static", rather than StaticFiles at "/": a catch-all
    # mount would answer /api paths that match no route (405s with the wrong Allow header).
    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> Any:
    """`api.main:app`, built on first use: importing this module reads no settings."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
