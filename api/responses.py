"""JSON responses rendered by orjson, and the error body of the contract."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import JSONResponse

# The bytes of the last answers rendered, by the answer object: the reader gives the same
# object again while its replies are unchanged (read/runner.py), and rendering a model costs
# more than the rest of such a request. Holding the object keeps its id from being reused.
_RENDERED: dict[int, tuple[BaseModel, bytes]] = {}
RENDERED_KEPT = 64


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson.

    A JSONResponse subclass, not a bare Response: FastAPI documents a route's response_model in
    OpenAPI only for JSON response classes, and would otherwise announce `{"type": "string"}`.
    """

    def render(self, content: Any) -> bytes:
        if not isinstance(content, BaseModel):
            return orjson.dumps(content)
        found = _RENDERED.get(id(content))
        if found is not None and found[0] is content:
            return found[1]
        body = orjson.dumps(content.model_dump())
        if len(_RENDERED) >= RENDERED_KEPT:
            _RENDERED.clear()
        _RENDERED[id(content)] = (content, body)
        return body


class ErrorBody(BaseModel):
    """Every error the API returns, whatever its status."""

    error: str
    message: str
    details: dict[str, Any] = {}


def error_response(
    status: int, error: str, message: str, details: dict[str, Any] | None = None
) -> OrjsonResponse:
    body = {"error": error, "message": message, "details": details or {}}
    return OrjsonResponse(body, status_code=status)
