"""docs/architecture.md is the newcomers' map: it must name every module, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "architecture.md"
PACKAGES = ("metrics_store", "api", "workers")


def modules_in_tree() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".lua") and "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def modules_on_the_map() -> set[str]:
    # The tables' first column: `package/.../module.py` (or .lua), one row per module.
    rows = re.findall(r"^\| `([\w/]+\.(?:py|lua))` \|", MAP.read_text(), re.MULTILINE)
    return set(rows)


def test_every_module_is_on_the_map() -> None:
    missing = sorted(modules_in_tree() - modules_on_the_map())
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_the_map_names_no_module_that_is_gone() -> None:
    gone = sorted(modules_on_the_map() - modules_in_tree())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
