"""Bounds on a request's URL and headers, checked before any route sees them.

uvicorn's default HTTP parser (httptools) caps neither, so a 10 MB header would reach the
app. No endpoint needs more than a short query string, so anything past these bounds is
refused with the contract's error body: 414 for the URL, 431 for the headers. A WebSocket
handshake past them is refused before it is accepted (the server answers 403).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api.responses import error_response

# Generous for any real client (a browser sends a few KB of headers with its cookies) and
# the same order as common proxies' defaults (nginx: 8 KB per request line or header line).
MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024


def _url_bytes(scope: Scope) -> int:
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return len(path) + (len(query) + 1 if query else 0)  # + 1: the "?"


def _header_bytes(scope: Scope) -> int:
    return sum(len(name) + len(value) for name, value in scope.get("headers", ()))


def _problem(scope: Scope) -> tuple[int, str, str] | None:
    """(status, error, message) if the request is past a bound, else None."""
    if _url_bytes(scope) > MAX_URL_BYTES:
        return 414, "RequestURITooLong", f"the URL is over {MAX_URL_BYTES} bytes"
    if _header_bytes(scope) > MAX_HEADER_BYTES:
        message = f"the headers are over {MAX_HEADER_BYTES} bytes in all"
        return 431, "RequestHeaderFieldsTooLarge", message
    return None


class RequestLimits:
    """ASGI middleware: refuses an oversized URL or header block, passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = _problem(scope) if scope["type"] in ("http", "websocket") else None
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1009, "reason": problem[2]})
        else:
            status, error, message = problem
            await error_response(status, error, message)(scope, receive, send)
