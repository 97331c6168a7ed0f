"""The endpoints under /api/metrics/: REST, and the live WebSocket."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, WebSocket

from api.deps import LiveDep, ReaderDep, SettingsDep
from api.responses import ErrorBody, OrjsonResponse
from api.security import admit_websocket
from metrics_store.errors import InvalidObjectives
from metrics_store.read.shapes import (
    HealthStatus,
    LatencyHistory,
    LatencyMetrics,
    QueryMetrics,
    ResourceMetrics,
    RoutingMetrics,
    SloMetrics,
    TiersResponse,
)
from metrics_store.read.windows import parse_window, window_schema_pattern
from metrics_store.settings import MAX_NAME_CHARS, NAME_PATTERN, Settings
from metrics_store.slo.definitions import definitions_schema, parse_objectives
from metrics_store.slo.store import StoredObjectives

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


# The tiers the PUT's schema names: the default ones (as WindowQuery's pattern spells the
# default history); the route checks the configured ones.
SCHEMA_TIERS = Settings.default_of("tiers")

# ?window=: seconds, or a number with s, m, h or d; at most METRICS_HISTORY_S (else 422).
# The schema's pattern spells the default history; parse_window enforces the configured one.
WindowQuery = Annotated[
    str | None,
    Query(
        max_length=16,
        pattern=window_schema_pattern(Settings.default_of("history_s")),
        description="Window: seconds or 5m, 1h, 24h, 7d (default the 30-minute window); "
        "at most the history kept (METRICS_HISTORY_S), rounded up to whole 10-s buckets.",
    ),
]

TierQuery = Annotated[str | None, Query(max_length=MAX_NAME_CHARS, description="Only this tier.")]


def _window_s(window: str | None, settings: Settings) -> int | None:
    return (
        None
        if window is None
        else parse_window(window, settings.retention.bucket_s, settings.retention.history_s)
    )


UNKNOWN_TIER: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No configured tier has that name."}
}
# An answer per tier, of which ?tier= keeps one.
PerTier = TypeVar("PerTier", LatencyMetrics, LatencyHistory)


def _only_tier(answer: PerTier, tier: str | None) -> PerTier:
    if tier is None:
        return answer
    return answer.model_copy(update={"tiers": [t for t in answer.tiers if t.name == tier]})


def _check_tier(tier: str | None, settings: Settings) -> None:
    if tier is not None and tier not in settings.tiers:
        raise HTTPException(404, f"no tier named {tier!r}; tiers: {', '.join(settings.tiers)}")


@router.get("/queries", response_model=QueryMetrics, response_class=OrjsonResponse)
async def get_queries(
    reader: ReaderDep, settings: SettingsDep, window: WindowQuery = None
) -> OrjsonResponse:
    """Query rate per 10-second bucket (per window/18 with ?window=), and the window's totals."""
    return OrjsonResponse(await reader.queries(_window_s(window, settings)))


@router.get("/tiers", response_model=TiersResponse, response_class=OrjsonResponse)
async def get_tiers(
    reader: ReaderDep, settings: SettingsDep, window: WindowQuery = None
) -> OrjsonResponse:
    """Per-tier sparklines of the last queries; request count, error rate, percentiles."""
    return OrjsonResponse(await reader.tiers(_window_s(window, settings)))


@router.get(
    "/latency",
    response_model=LatencyMetrics,
    response_class=OrjsonResponse,
    responses=UNKNOWN_TIER,
)
async def get_latency(
    reader: ReaderDep,
    settings: SettingsDep,
    window: WindowQuery = None,
    tier: TierQuery = None,
) -> OrjsonResponse:
    """Latency, time to first token, queue time and time per output token: p50 to p99.9."""
    _check_tier(tier, settings)
    return OrjsonResponse(_only_tier(await reader.latency(_window_s(window, settings)), tier))


@router.get(
    "/latency/history",
    response_model=LatencyHistory,
    response_class=OrjsonResponse,
    responses=UNKNOWN_TIER,
)
async def get_latency_history(
    reader: ReaderDep,
    settings: SettingsDep,
    window: WindowQuery = None,
    figure: Annotated[
        Literal["latency", "ttft", "queue", "tpot"],
        Query(description="The figure: latency (default), ttft, queue or tpot."),
    ] = "latency",
    tier: TierQuery = None,
) -> OrjsonResponse:
    """p50, p95 and p99 per tier at each of the window's 18 points, each of its own queries."""
    _check_tier(tier, settings)
    answer = await reader.latency_history(_window_s(window, settings), figure)
    return OrjsonResponse(_only_tier(answer, tier))


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
async def get_routing(
    reader: ReaderDep, settings: SettingsDep, window: WindowQuery = None
) -> OrjsonResponse:
    """The complexity x tier decision matrix, decision figures and model availability."""
    return OrjsonResponse(await reader.routing(_window_s(window, settings)))


@router.get("/health", response_model=HealthStatus, response_class=OrjsonResponse)
async def get_health(reader: ReaderDep) -> OrjsonResponse:
    """Live nodes and replicas, and each live collector's written, dropped and pending events."""
    return OrjsonResponse(await reader.health())


@router.get("/slo", response_model=SloMetrics, response_class=OrjsonResponse)
async def get_slo(reader: ReaderDep) -> OrjsonResponse:
    """Each objective's error budget left, burn rates over the alerting windows, and state."""
    return OrjsonResponse(await reader.slo())


def _definitions(stored: StoredObjectives) -> dict[str, Any]:
    return {
        "version": stored.version,
        "objectives": [objective.as_json() for objective in stored.objectives],
    }


@router.get("/slo/definitions", response_class=OrjsonResponse)
async def get_slo_definitions(reader: ReaderDep) -> OrjsonResponse:
    """The objectives every replica and collector uses, and their version."""
    return OrjsonResponse(_definitions(await reader.objectives.current()))


@router.put(
    "/slo/definitions",
    response_class=OrjsonResponse,
    responses={422: {"model": ErrorBody, "description": "A definition is invalid: none stored."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": definitions_schema(SCHEMA_TIERS)}},
        }
    },
)
async def put_slo_definitions(
    request: Request, reader: ReaderDep, settings: SettingsDep
) -> OrjsonResponse:
    """Replace the objectives, whole (docs/slo.md); every replica and collector follows."""
    objectives = parse_objectives(
        _json_body(await request.body()), settings.tiers, settings.slo.history_s
    )
    return OrjsonResponse(_definitions(await reader.objectives.replace(objectives)))


def _json_body(raw: bytes) -> object:
    """The body as JSON; anything else is a definition problem like any other (422)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidObjectives([f"the body is not JSON: {exc}"]) from exc


@live_router.websocket("/ws")
async def metrics_ws(websocket: WebSocket, live: LiveDep, settings: SettingsDep) -> None:
    """The live stream: the latest metrics_update at once, then one a second."""
    if await admit_websocket(websocket, settings):
        await live.serve(websocket)
