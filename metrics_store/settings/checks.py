"""The checks every setting's value passes: names, origins, sentinel addresses, the node's name."""

from __future__ import annotations

import re
import socket

# Names end up inside Redis key names and sorted-set members ("count:Q2"), so they are kept


# Names end up inside Redis key names and sorted-set members ("count:Q2"), so they are kept
# to characters that never need quoting in redis-cli and never contain our separators.
# Checked with fullmatch: in Python's re, "$" also matches before a trailing newline.
MAX_NAME_CHARS = 64
NAME_PATTERN = re.compile(rf"^[A-Za-z0-9._-]{{1,{MAX_NAME_CHARS}}}$")


def split_names(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_names(field: str, names: list[str]) -> list[str]:
    if not names:
        raise ValueError(f"{field} must name at least one entry")
    for name in names:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"{field}: {name!r} must match {NAME_PATTERN.pattern}")
    if len(set(names)) != len(names):
        raise ValueError(f"{field} must not repeat a name")
    return names


# A shorter bearer token could be guessed; `openssl rand -hex 32` makes a good one.
MIN_TOKEN_CHARS = 16
# What a browser sends as Origin: scheme, host (a name, or an IPv6 literal in brackets), port.
ORIGIN_PATTERN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def check_origin(origin: str) -> str:
    """An allow-list entry: "*" or scheme://host[:port] exactly as browsers send Origin."""
    if origin != "*" and not ORIGIN_PATTERN.match(origin):
        raise ValueError(
            f"cors_origins: {origin!r} must be '*' or http(s)://host[:port], with no path"
        )
    return origin.lower()


# One sentinel: a host name or IPv4 address, or an IPv6 literal in brackets, then a port.
SENTINEL_PATTERN = re.compile(
    r"(?:(?P<host>[A-Za-z0-9._-]+)|\[(?P<v6>[0-9A-Fa-f:.]+)\]):(?P<port>[0-9]{1,5})"
)
SentinelAddress = tuple[str, int]


def default_node_name() -> str:
    """The host name, cut down to the characters a node name may hold."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64]
    return cleaned or "node"


# Each group is frozen like the whole, and hides its input in errors for the same reason:
# a model-level check would otherwise quote every value of the group, passwords included.


def parse_sentinel_address(text: str) -> SentinelAddress:
    """ "host:port" (or "[v6]:port") as a (host, port) pair; ValueError naming the entry."""
    # Only the entry itself is quoted: it is an address, never a secret.
    match = SENTINEL_PATTERN.fullmatch(text)
    port = int(match.group("port")) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise ValueError(f"redis_sentinels: {text!r} must be host:port, port 1-65535")
    return match.group("host") or match.group("v6"), port
