"""The docs stay true: every setting is in the README's table, every key in the schema doc."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from metrics_store.redis.keys import Keys
from metrics_store.settings import ENV_NAMES

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    missing = set(ENV_NAMES.values()) - documented
    assert not missing, f"README configuration table lacks {sorted(missing)}"


# How the schema doc spells the keys that take arguments.
PLACEHOLDERS = {
    "query_bucket": (10, "<start>"),
    "routing_bucket": (10, "<start>"),
    "histogram_bucket": ("<figure>", "<tier>", 10, "<start>"),
    "histogram_totals": ("<figure>", "<tier>"),
    "recent_queries": ("<tier>",),
    "tick_lock": ("<second>",),
    "written_batch": ("<id>",),
    "otlp_stream": ("<id>",),
    "engine_seen": ("<id>",),
}


def test_every_key_is_in_the_schema_doc() -> None:
    schema = (ROOT / "docs" / "redis-schema.md").read_text()
    keys = Keys("p")  # root "{p}", as the doc writes it
    names = [
        getattr(keys, name)
        for name in vars(Keys)
        if isinstance(vars(Keys)[name], property)
        and name not in ("root", "control_root", "scan_pattern")
    ]
    names += [getattr(keys, method)(*args) for method, args in PLACEHOLDERS.items()]
    methods = {n for n, v in vars(Keys).items() if callable(v) and not n.startswith("_")}
    assert methods == set(PLACEHOLDERS), "a new key method needs its placeholder here"
    missing = [name for name in names if f"`{name}`" not in schema]
    assert not missing, f"docs/redis-schema.md lacks {missing}"


def test_no_tracked_file_holds_a_merge_conflict() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.decode()
    markers = ("<<<<<<< ", ">>>>>>> ")
    conflicted = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png"}:
            continue
        text = path.read_text(errors="replace")
        if any(line.startswith(markers) for line in text.splitlines()):
            conflicted.append(name)
    assert conflicted == []
