"""Map every failure to the contract's error body, once, here."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.responses import error_response
from metrics_store.errors import InvalidObjectives, InvalidWindow, StoreUnavailable, UnknownNode

log = logging.getLogger(__name__)


def _error_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, _error_name(exc.status_code), str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. WWW-Authenticate on a 401
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), exclude={"input", "url", "ctx"})
    fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in errors)
    return error_response(422, "ValidationError", f"invalid request: {fields}", {"errors": errors})


async def _unknown_node(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UnknownNode)
    return error_response(404, "UnknownNode", str(exc), {"node": exc.node})


async def _invalid_window(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidWindow)
    return error_response(422, "InvalidWindow", str(exc), {"window": exc.text})


async def _invalid_objectives(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidObjectives)
    message = f"{len(exc.problems)} problem(s) in the objectives; nothing was stored"
    return error_response(422, "InvalidObjectives", message, {"problems": exc.problems})


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("answering 503: %s", exc)
    # The message stays generic: the underlying error may name the Redis host.
    return error_response(503, "StoreUnavailable", "the metrics store (Redis) is unreachable")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return error_response(500, "InternalServerError", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(UnknownNode, _unknown_node)
    app.add_exception_handler(InvalidWindow, _invalid_window)
    app.add_exception_handler(InvalidObjectives, _invalid_objectives)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(Exception, _internal_error)
