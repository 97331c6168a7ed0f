"""A tool a test needs: missing, it skips the test locally and fails it in CI (CI=true)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
MISSING = "metrics-store-no-such-tool"
HINT = "scripts/ensure-nothing installs it"

NEEDS_A_MISSING_TOOL = f"""
from tests.tools import require_tool

def test_needs_the_tool() -> None:
    require_tool({MISSING!r}, install_hint={HINT!r})
"""


def test_a_tool_that_is_there_gives_its_path() -> None:
    assert require_tool("sh", install_hint=HINT) == shutil.which("sh")
    assert require_tool("python", sys.executable, install_hint=HINT) == sys.executable


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    set_ci(monkeypatch, ci)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} not found on PATH; {HINT}"):
        require_tool(MISSING, install_hint=HINT)
    with pytest.raises(pytest.skip.Exception, match="not found at /nowhere/tool"):
        require_tool(MISSING, "/nowhere/tool", install_hint=HINT)


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_a_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    set_ci(monkeypatch, ci)
    with pytest.raises(pytest.fail.Exception, match=f"CI=true: a test needs {MISSING}"):
        require_tool(MISSING, install_hint=HINT)


@pytest.mark.parametrize(
    ("ci", "status", "outcome"), [(None, 0, "1 skipped"), ("true", 1, "1 failed")]
)
def test_a_pytest_run_needing_a_missing_tool(
    tmp_path: Path, ci: str | None, status: int, outcome: str
) -> None:
    """The whole run: it passes with the test skipped locally, and fails in CI."""
    (tmp_path / "test_needs_tool.py").write_text(NEEDS_A_MISSING_TOOL)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(ROOT)}
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_needs_tool.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == status, done.stdout + done.stderr
    assert outcome in done.stdout


@pytest.mark.parametrize(("ci", "status", "says"), [(None, 0, "warning"), ("true", 1, "error")])
def test_make_test_installing_a_tool_that_fails(ci: str | None, status: int, says: str) -> None:
    """scripts/ensure-test-tool, as `make test` calls it: a warning locally, an error in CI."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        [str(ROOT / "scripts" / "ensure-test-tool"), "chromium", "false"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == status
    assert done.stderr.startswith(f"{says}: ") and "chromium" in done.stderr


def test_a_tool_that_installs_is_silent() -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "ensure-test-tool"), "chromium", "true"],
        env=os.environ | {"CI": "true"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (0, "")


def set_ci(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
