"""External tools that some tests need (chromium; later promtool, prometheus).

Locally a missing tool skips the tests that need it, with the reason. In CI (`CI=true`) it
fails them instead: a CI run proves every test passed, so it never skips one for a tool the
environment should have installed (`make test` installs them, or stops with an error in CI).
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# The values CI services set (GitHub Actions, GitLab, and others: "true"); scripts/ensure-test-tool
# reads the variable the same way.
CI_VALUES = ("true", "1")


def in_ci() -> bool:
    """Whether this run is CI's: CI=true (or 1), in any case."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def find_tool(name: str, path: str | None = None) -> str | None:
    """`path` if it is an executable file, else (no path given) `name` on PATH; None if neither."""
    if path is None:
        return shutil.which(name)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def require_tool(name: str, path: str | None = None, *, install_hint: str) -> str:
    """The tool's path; if it is missing, skip the calling test, or fail it under CI=true.

    Call it from a test or a fixture: `require_tool("promtool", install_hint="...")`.
    """
    found = find_tool(name, path)
    if found is not None:
        return found
    where = f"at {path}" if path is not None else "on PATH"
    skip_or_fail_in_ci(f"{name} not found {where}; {install_hint}")


def skip_or_fail_in_ci(missing: str) -> NoReturn:
    """Skip the calling test for `missing`; under CI=true, where every test must run, fail it."""
    if in_ci():
        pytest.fail(f"CI=true: a test needs {missing}", pytrace=False)
    pytest.skip(missing)
