"""Who may use the API: the optional bearer token, and the browser origins let in.

    REST        require_token (a route dependency, added only when METRICS_API_TOKEN is set)
    WebSocket   admit_websocket, before the handshake is accepted: Origin, then the token
    CORS        install_cors: Starlette's CORSMiddleware for METRICS_CORS_ORIGINS

docs/security.md explains the choices.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.websockets import WebSocket

from api.responses import error_response
from metrics_store.settings import Settings

log = logging.getLogger(__name__)

# Named in OpenAPI, so /api/docs shows an "Authorize" button when a token is required.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="METRICS_API_TOKEN, sent as `Authorization: Bearer <token>`.",
)
UNAUTHORIZED_MESSAGE = "missing or wrong bearer token: send Authorization: Bearer <token>"
CHALLENGE = {"WWW-Authenticate": "Bearer"}
POLICY_VIOLATION = 1008
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def token_matches(expected: SecretStr, given: str | None) -> bool:
    """True if `given` is the token; compared in constant time, so timing tells nothing."""
    if given is None:
        return False
    return secrets.compare_digest(given.encode(), expected.get_secret_value().encode())


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> None:
    """The REST routes' guard: 401 (with the error body) unless the bearer token is right."""
    settings: Settings = request.app.state.settings
    expected = settings.api.token
    given = credentials.credentials if credentials is not None else None
    if expected is not None and not token_matches(expected, given):
        raise HTTPException(401, UNAUTHORIZED_MESSAGE, headers=CHALLENGE)


# --- the WebSocket -----------------------------------------------------------------------------
def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """No Origin (not a browser), the API's own origin, or one of the allow-list."""
    if origin is None:
        return True
    if "*" in allowed or origin.lower() in allowed:
        return True
    return host is not None and _same_authority(origin.lower(), host.lower())


def _same_authority(origin: str, host: str) -> bool:
    """Origin and Host name the same host and port (a missing port: the scheme's default)."""
    origin_parts = urlsplit(origin)
    host_parts = urlsplit(f"//{host}")
    default = DEFAULT_PORTS.get(origin_parts.scheme)
    try:
        origin_port = origin_parts.port or default
        host_port = host_parts.port or default
    except ValueError:  # a port out of range: no match, never an error
        return False
    return (
        origin_parts.hostname is not None
        and origin_parts.hostname == host_parts.hostname
        and origin_port == host_port
    )


def websocket_token(websocket: WebSocket) -> str | None:
    """The token of a handshake: `Authorization: Bearer`, else `?token=` (browsers can set
    no header on a WebSocket)."""
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return websocket.query_params.get("token")


async def admit_websocket(websocket: WebSocket, settings: Settings) -> bool:
    """Check a handshake before accepting it; False once it has been refused."""
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), settings.api.cors_origins):
        log.debug("live: refused a WebSocket from origin %r", origin)
        await _refuse(websocket, 403, "Forbidden", f"origin {origin!r} is not allowed")
        return False
    expected = settings.api.token
    if expected is not None and not token_matches(expected, websocket_token(websocket)):
        await _refuse(websocket, 401, "Unauthorized", UNAUTHORIZED_MESSAGE, CHALLENGE)
        return False
    return True


async def _refuse(
    websocket: WebSocket,
    status: int,
    error: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer the handshake with `status` and the error body where the server can; otherwise
    close it with 1008, which the server sends as a bare 403."""
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        await websocket.close(POLICY_VIOLATION)
        return
    response = error_response(status, error, message)
    response.headers.update(headers or {})
    await websocket.send_denial_response(response)


# --- CORS ---------------------------------------------------------------------------------------
class ErrorBodyCors(CORSMiddleware):
    """CORSMiddleware whose refused preflight carries the contract's error body."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = error_response(response.status_code, "BadRequest", bytes(response.body).decode())
        for name, value in response.headers.items():
            if name.lower().startswith("access-control-") or name.lower() == "vary":
                refused.headers[name] = value
        return refused


def install_cors(app: FastAPI, settings: Settings) -> None:
    """CORS for METRICS_CORS_ORIGINS (none when empty): GETs, with the token's header.

    No credentials (cookies): the API never sets any, and the token travels in a header.
    """
    if settings.api.cors_origins:
        app.add_middleware(
            ErrorBodyCors,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET"],
            allow_headers=["Authorization"],
            max_age=600,
        )


def exposure_warning(host: str, settings: Settings) -> str | None:
    """A warning when the API listens beyond this machine and asks for no token."""
    if host in LOOPBACK_HOSTS or settings.api.token is not None:
        return None
    return (
        f"the API listens on {host} and METRICS_API_TOKEN is unset: anyone who can reach "
        "this port reads the metrics (see docs/security.md)"
    )
