"""The Lua scripts of the store, read once from the package."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def lua_source(name: str) -> str:
    """The text of metrics_store/lua/<name>.lua."""
    return resources.files("metrics_store").joinpath("lua", f"{name}.lua").read_text("utf-8")


INGEST = "ingest"
READ = "read"
WRITE_SNAPSHOT = "write_snapshot"
