"""`POST /v1/metrics`: the OTLP/HTTP metrics receiver, on the API and on its own port.

Answers per the OTLP/HTTP spec, in the request's own encoding (protobuf or JSON): 200 with an
ExportMetricsServiceResponse (partial_success names the points refused and why); 400, 413 or
415 with a google.rpc.Status for a body refused whole (nothing written); 503 while Redis is
unreachable (the exporter retries; a retry adds nothing twice: sources/otlp/receiver.py).
"""

from __future__ import annotations

import logging
import threading

import redis
from fastapi import APIRouter, FastAPI, Request
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from metrics_store.settings import Settings
from metrics_store.sources.otlp.convert import BadPoint
from metrics_store.sources.otlp.decode import JSON, PROTOBUF, BodyRefused, decode, media_type
from metrics_store.sources.otlp.receiver import OtlpReceiver

log = logging.getLogger(__name__)
otlp_router = APIRouter(tags=["otlp"])
_made = threading.Lock()
# google.rpc.Code: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE
RPC_CODES = {400: 3, 413: 8, 415: 3, 503: 14}


def _encoded(message: Message, kind: str, status: int = 200) -> Response:
    if kind == JSON:
        return Response(MessageToJson(message, indent=None), status, media_type=JSON)
    return Response(message.SerializeToString(), status, media_type=PROTOBUF)


def _status(status: int, message: str, kind: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    response = _encoded(Status(code=RPC_CODES.get(status, 2), message=message), kind, status)
    response.headers.update(headers or {})
    return response


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit` bytes: never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyRefused(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def receiver_of(app: FastAPI) -> OtlpReceiver:
    """The app's receiver, made on the first export (its Redis client with it)."""
    with _made:
        found: OtlpReceiver | None = getattr(app.state, "otlp", None)
        if found is None:
            settings: Settings = app.state.settings
            found = app.state.otlp = OtlpReceiver(settings)
        return found


# Out of the OpenAPI schema: OTLP/HTTP specifies this endpoint (bodies, statuses, the
# google.rpc.Status error), not the API's contract, whose error body it does not answer with.
@otlp_router.post("/v1/metrics", response_class=Response, include_in_schema=False)
async def export_metrics(request: Request) -> Response:
    """Record an OTLP metrics export: protobuf or JSON, gzip or not."""
    settings: Settings = request.app.state.settings
    header = request.headers.get("content-type")
    kind = JSON if (header or "").lower().startswith(JSON) else PROTOBUF
    try:
        kind = media_type(header)
        limit = settings.otlp.max_body_bytes
        body = await _body(request, limit)
        export, kind = decode(body, header, request.headers.get("content-encoding"), limit)
        result = await run_in_threadpool(receiver_of(request.app).export, export)
    except BodyRefused as exc:
        return _status(exc.status, str(exc), kind)
    except BadPoint as exc:
        return _status(400, f"the export is malformed, nothing was written: {exc}", kind)
    except redis.RedisError as exc:
        log.warning("OTLP export answered 503: %s", exc)
        return _status(503, "the metrics store (Redis) is unreachable; retry", kind)
    answer = ExportMetricsServiceResponse()
    if result.rejected:
        answer.partial_success.rejected_data_points = result.rejected
        answer.partial_success.error_message = result.message
    return _encoded(answer, kind)


def create_otlp_app(settings: Settings) -> FastAPI:
    """`metrics-store otlp`: the receiver alone, as an OTel Collector's port 4318 serves it."""
    from fastapi import Depends

    from api.errors import install_error_handlers
    from api.limits import RequestLimits
    from api.security import require_token

    app = FastAPI(title="metrics-store OTLP receiver", docs_url=None, redoc_url=None)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestLimits)
    guard = [Depends(require_token)] if settings.api.token is not None else []
    app.include_router(otlp_router, dependencies=guard)
    return app


def close_receiver(app: FastAPI) -> None:
    """At shutdown: the receiver's Redis client, if an export made one."""
    found: OtlpReceiver | None = getattr(app.state, "otlp", None)
    if found is not None:
        found.close()
