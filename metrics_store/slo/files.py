"""METRICS_SLO_FILE: objectives in TOML or YAML, by the file's suffix, checked like a PUT."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from metrics_store.errors import InvalidObjectives
from metrics_store.settings import Settings
from metrics_store.slo.definitions import Objective, parse_objectives


def read_objectives_file(path: str | Path, settings: Settings) -> list[Objective]:
    """The file's objectives; InvalidObjectives naming the file and each problem."""
    where = Path(path)
    try:
        raw = _parse(where)
    except (OSError, ValueError) as exc:  # tomllib's and yaml's errors are ValueErrors
        raise InvalidObjectives([f"{where}: {exc}"]) from exc
    try:
        return parse_objectives(raw, settings.tiers, settings.slo.history_s)
    except InvalidObjectives as exc:
        raise InvalidObjectives([f"{where}: {problem}" for problem in exc.problems]) from exc


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # the [api] extra's: only the API and the CLI read the file

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"not YAML: {exc}") from exc
    if path.suffix == ".toml":
        return tomllib.loads(text)
    raise ValueError("an objectives file ends in .toml, .yaml or .yml")
