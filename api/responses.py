"""JSON responses rendered by orjson, and the error body of the contract."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson.

    A JSONResponse subclass, not a bare Response: FastAPI documents a route's response_model in
    OpenAPI only for JSON response classes, and would otherwise announce `{"type": "string"}`.
    """

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            content = content.model_dump()
        return orjson.dumps(content)


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
