"""An OTLP/HTTP export body as its message: protobuf or JSON, gzip undone, size bounded.

Everything refused here is refused whole, before anything is written: 400 for a body that is
not an export, 413 for one past `max_body_bytes` (after gzip is undone too: a small bomb is no
way past the bound), 415 for a content type or encoding OTLP/HTTP does not define.
"""

from __future__ import annotations

import zlib

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BodyRefused(ValueError):
    """The body is not an export we take; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def media_type(content_type: str | None) -> str:
    """The content type without its parameters, or a 415."""
    found = (content_type or "").split(";")[0].strip().lower()
    if found not in (PROTOBUF, JSON):
        raise BodyRefused(415, f"content type {found or 'none'!r}: send {PROTOBUF} or {JSON}")
    return found


def gunzip(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone (gzip or none), at most `limit` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise BodyRefused(415, f"content encoding {encoding!r}: send gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyRefused(400, f"the gzip body is corrupt: {exc}") from exc
    if len(out) > limit:
        raise BodyRefused(413, f"the body is over {limit} bytes once gunzipped")
    if not inflater.eof:
        raise BodyRefused(400, "the gzip body is truncated")
    return out


def decode(
    body: bytes, content_type: str | None, encoding: str | None, limit: int
) -> tuple[ExportMetricsServiceRequest, str]:
    """(the export, its media type, which the answer is written in)."""
    kind = media_type(content_type)
    raw = gunzip(body, encoding, limit)
    request = ExportMetricsServiceRequest()
    try:
        if kind == PROTOBUF:
            request.ParseFromString(raw)
        else:
            json_format.Parse(raw.decode("utf-8"), request, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        what = "protobuf" if kind == PROTOBUF else "JSON"
        raise BodyRefused(400, f"the body is not an OTLP metrics export ({what}): {exc}") from exc
    return request, kind
