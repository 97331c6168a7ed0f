"""`pip install metrics-store` alone: the collector records, and nothing of the web stack comes.

One fresh venv per session holds a non-editable install of the core (no extras), built from a
copy of the package sources so that nothing of this checkout (build/, caches) leaks into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from metrics_store.redis.keys import Keys
from workers import cli

# Building the venv and installing the core from the package index takes a minute or so.
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "metrics_store", "api", "workers")
OPTIONAL = ("fastapi", "uvicorn", "websockets", "rq", "psutil", "pynvml", "fakeredis")

RECORD_AND_FLUSH = """
import metrics_store
from metrics_store import get_metrics_collector

collector = get_metrics_collector()
for i in range(10):
    collector.record_query("Q2", 100.0 + i, 20, 80.0)
collector.flush(timeout_s=30)
collector.close()
print(metrics_store.__file__)
"""


@pytest.fixture(scope="session")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `pip install <project>` (core only, not editable); its bin/ directory."""
    base = tmp_path_factory.mktemp("packaging")
    project = base / "project"
    project.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(project)]
    subprocess.run(install, check=True, capture_output=True)
    return venv / "bin"


def run_in(
    cwd: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run from outside the checkout (`cwd`), so the venv's own install is what gets imported.

    PYTHONPATH is dropped: a run with the checkout on it (PYTHONPATH=$PWD) would import that."""
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        args,
        cwd=cwd,
        env={**inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_core_install_records_and_flushes(
    core_venv: Path, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    script = tmp_path / "record.py"
    script.write_text(RECORD_AND_FLUSH)
    env = {"REDIS_URL": redis_url, "METRICS_KEY_PREFIX": prefix, "METRICS_NODE": "core-node"}
    result = run_in(tmp_path, [str(core_venv / "python"), str(script)], env)
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout  # the installed package, not this checkout
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(Keys(prefix).query_stream)
    finally:
        client.close()
    assert len(entries) == 10
    assert {fields[b"tier"] for _, fields in entries} == {b"Q2"}


def test_the_core_install_has_none_of_the_extras(core_venv: Path, tmp_path: Path) -> None:
    python = str(core_venv / "python")
    imported = run_in(tmp_path, [python, "-c", "import fastapi"])
    assert imported.returncode != 0
    assert "ModuleNotFoundError" in imported.stderr
    find = f"import importlib.util as u; print([m for m in {OPTIONAL!r} if u.find_spec(m)])"
    assert run_in(tmp_path, [python, "-c", find]).stdout.strip() == "[]"


# What the project ships: the three runtime packages and their metadata, nothing of tests/
# or bench/ (their helpers, tests/waiting.py and tests/sentinel_topology.py, included).
SHIPPED_TOP_LEVEL = {"metrics_store", "api", "workers"}

LIST_INSTALLED = """
from importlib.metadata import files
for path in files("metrics-store"):
    print(path)
"""


def test_the_install_ships_the_runtime_packages_and_no_test_helpers(
    core_venv: Path, tmp_path: Path
) -> None:
    listed = run_in(tmp_path, [str(core_venv / "python"), "-c", LIST_INSTALLED])
    assert listed.returncode == 0, listed.stderr
    paths = listed.stdout.split()
    top_level = {p.split("/")[0] for p in paths if not p.startswith("../")}
    assert {t for t in top_level if not t.endswith(".dist-info")} == SHIPPED_TOP_LEVEL
    assert "workers/sampler.py" in paths  # the listing is the real one
    assert not [p for p in paths if p.endswith(("waiting.py", "sentinel_topology.py"))]


def test_the_console_script_runs_with_the_core_alone(core_venv: Path, tmp_path: Path) -> None:
    result = run_in(tmp_path, [str(core_venv / "metrics-store"), "--help"])
    assert result.returncode == 0, result.stderr
    assert "sampler" in result.stdout


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("api", "api"),
        ("watch", "api"),
        ("sampler", "sampler"),
        ("worker", "worker"),
        ("simulate", "worker"),
        ("up", "all"),
    ],
)
def test_a_subcommand_without_its_extra_says_which_in_one_line(
    core_venv: Path, tmp_path: Path, command: str, extra: str
) -> None:
    result = run_in(tmp_path, [str(core_venv / "metrics-store"), command])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"metrics-store {command}: needs the [{extra}] extra: "
        f"pip install 'metrics-store[{extra}]'\n"
    )


def test_a_missing_module_that_no_extra_provides_is_a_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "workers.sampler", None)  # importing it now fails
    with pytest.raises(ModuleNotFoundError):
        cli.main(["sampler"])


def test_the_public_api_is_importable_from_the_top_package() -> None:
    """What callers import: from the top package, whichever room holds it."""
    from metrics_store import (  # noqa: F401
        EventsLost,
        InvalidMetric,
        MetricsCollector,
        Settings,
        StoreUnavailable,
        get_metrics_collector,
        get_settings,
        track_query,
        track_routing_decision,
    )

    assert track_query.__module__ == "metrics_store.record.instrument"
    assert get_metrics_collector.__module__ == "metrics_store.record.collector"
