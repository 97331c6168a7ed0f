"""The endpoints under /api/metrics/: REST, and the live WebSocket."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket

from api.deps import LiveDep, ReaderDep, SettingsDep
from api.responses import ErrorBody, OrjsonResponse
from api.security import admit_websocket
from metrics_store.settings import MAX_NAME_CHARS, NAME_PATTERN
from metrics_store.shapes import (
    HealthStatus,
    QueryMetrics,
    ResourceMetrics,
    RoutingMetrics,
    TiersResponse,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    414: {"model": ErrorBody, "description": "URL too long (api/limits.py)."},
    422: {"model": ErrorBody, "description": "Invalid query parameters."},
    431: {"model": ErrorBody, "description": "Headers too large (api/limits.py)."},
    503: {"model": ErrorBody, "description": "Redis is unreachable; retry shortly."},
}

# REST and the WebSocket apart: the REST router gets the token dependency when a token is
# set (and OpenAPI documents it); the WebSocket checks its handshake itself (?token=, Origin).
router = APIRouter(prefix="/api/metrics", tags=["metrics"], responses=ERRORS)
live_router = APIRouter(prefix="/api/metrics", tags=["metrics"])


@router.get("/queries", response_model=QueryMetrics, response_class=OrjsonResponse)
async def get_queries(reader: ReaderDep) -> OrjsonResponse:
    """Query rate per 10-second bucket, and totals over the rolling window."""
    return OrjsonResponse(await reader.queries())


@router.get("/tiers", response_model=TiersResponse, response_class=OrjsonResponse)
async def get_tiers(reader: ReaderDep) -> OrjsonResponse:
    """Per-tier sparklines of the last queries, request count and error rate."""
    return OrjsonResponse(await reader.tiers())


@router.get(
    "/resources",
    response_model=ResourceMetrics,
    response_class=OrjsonResponse,
    responses={404: {"model": ErrorBody, "description": "No live node has that name."}},
)
async def get_resources(
    reader: ReaderDep,
    node: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_NAME_CHARS,
            pattern=NAME_PATTERN.pattern,
            description="Only this node (METRICS_NODE).",
        ),
    ] = None,
) -> OrjsonResponse:
    """Hardware summed over the live nodes, each node's own figures, or one node's."""
    return OrjsonResponse(await reader.resources(node))


@router.get("/routing", response_model=RoutingMetrics, response_class=OrjsonResponse)
async def get_routing(reader: ReaderDep) -> OrjsonResponse:
    """The complexity x tier decision matrix, decision figures and model availability."""
    return OrjsonResponse(await reader.routing())


@router.get("/health", response_model=HealthStatus, response_class=OrjsonResponse)
async def get_health(reader: ReaderDep) -> OrjsonResponse:
    """Live nodes and replicas, and each live collector's written, dropped and pending events."""
    return OrjsonResponse(await reader.health())


@live_router.websocket("/ws")
async def metrics_ws(websocket: WebSocket, live: LiveDep, settings: SettingsDep) -> None:
    """The live stream: the latest metrics_update at once, then one a second."""
    if await admit_websocket(websocket, settings):
        await live.serve(websocket)
