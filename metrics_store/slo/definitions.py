"""Service-level objectives as data: what each one promises, checked whole before it is kept.

An objective promises that a share (`target`, e.g. 0.99) of a tier's queries are good over a
compliance window (30 days unless set). What "good" means is its kind:

- `latency`: the query's `figure` (latency, ttft, queue or tpot) is at most `thresholdMs`.
  It is counted from the latency histograms, whose bins have edges every 2.2 %: the threshold
  is snapped to the nearest edge (`effective_threshold_ms`), below which the count is exact.
- `errors`: the query did not fail.
- `combined`: the query did not fail and met every latency threshold of its tier (the
  effective thresholds of the `latency` objectives of that tier, and of all tiers). Counted
  as each query is written, by the collector, against the definitions of that moment:
  history is not rewritten.

`tier` is a configured tier, or "*" (every tier's queries together). A set of definitions is
refused whole, with every problem named (InvalidObjectives), so the stored set never holds
half of an edit.

    [[objectives]]                     # METRICS_SLO_FILE, TOML (YAML: the same keys)
    name = "q3-latency"
    tier = "Q3"
    kind = "latency"
    figure = "latency"
    thresholdMs = 2000
    target = 0.99
    window = "30d"
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metrics_store.errors import InvalidObjectives
from metrics_store.histogram import BINS_PER_DOUBLING, upper_bound_s
from metrics_store.redis.keys import FIGURE_LATENCY, FIGURES
from metrics_store.settings import NAME_PATTERN
from metrics_store.slo.burn import span

LATENCY, ERRORS, COMBINED = "latency", "errors", "combined"
KINDS = (LATENCY, ERRORS, COMBINED)
ALL_TIERS = "*"
DEFAULT_WINDOW = "30d"
# The longest burn-rate window (3 d) is the shortest compliance window that makes sense.
MIN_WINDOW_S = 3 * 86_400
MAX_OBJECTIVES = 100
_FIELDS = {"name", "tier", "kind", "figure", "thresholdMs", "target", "window"}
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True)
class Objective:
    name: str
    tier: str  # a configured tier, or ALL_TIERS
    kind: str
    target: float  # the share of good queries promised, in (0, 1)
    window_s: int  # the compliance window
    figure: str | None = None  # latency objectives only
    threshold_ms: float | None = None  # latency objectives only: as given

    @property
    def threshold_bin(self) -> int | None:
        """The histogram bin whose upper edge is the snapped threshold (latency only)."""
        if self.threshold_ms is None:
            return None
        return round(math.log2(self.threshold_ms / 1000.0) * BINS_PER_DOUBLING)

    @property
    def effective_threshold_ms(self) -> float | None:
        """The threshold the counts are exact for: the bin edge nearest the one given."""
        index = self.threshold_bin
        return None if index is None else upper_bound_s(index) * 1000.0

    def covers(self, tier: str) -> bool:
        return self.tier in (tier, ALL_TIERS)

    def as_json(self) -> dict[str, Any]:
        """The definition as given (the form PUT takes and the store keeps)."""
        found: dict[str, Any] = {
            "name": self.name,
            "tier": self.tier,
            "kind": self.kind,
            "target": self.target,
            "window": span(self.window_s),
        }
        if self.kind == LATENCY:
            found.update(figure=self.figure, thresholdMs=self.threshold_ms)
        return found


def parse_objectives(raw: object, tiers: Sequence[str], max_window_s: int) -> list[Objective]:
    """The objectives of a document {"objectives": [...]}; InvalidObjectives naming every
    problem if any one is wrong (`tiers`: the configured ones; `max_window_s`: the history
    of hour roll-ups kept)."""
    if not isinstance(raw, Mapping) or set(raw) != {"objectives"}:
        raise InvalidObjectives(['the definitions must be {"objectives": [...]}'])
    entries = raw["objectives"]
    if not isinstance(entries, list):
        raise InvalidObjectives(["objectives must be a list"])
    if len(entries) > MAX_OBJECTIVES:
        raise InvalidObjectives([f"at most {MAX_OBJECTIVES} objectives"])
    problems: list[str] = []
    objectives = []
    for position, entry in enumerate(entries):
        where = f"objectives[{position}]"
        found = _objective(entry, tiers, max_window_s, where, problems)
        if found is not None:
            objectives.append(found)
    names = [objective.name for objective in objectives]
    problems += [f"objective name {name!r} is used twice" for name in _repeated(names)]
    if problems:
        raise InvalidObjectives(problems)
    return objectives


def _objective(
    entry: object, tiers: Sequence[str], max_window_s: int, where: str, problems: list[str]
) -> Objective | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{where} must be a table of fields")
        return None
    before = len(problems)

    def problem(text: str) -> None:
        problems.append(f"{where} ({entry.get('name', '?')}): {text}")

    unknown = sorted(str(key) for key in set(entry) - _FIELDS)
    if unknown:
        problem(f"unknown fields {', '.join(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        problem(f"name must match {NAME_PATTERN.pattern}")
    tier = entry.get("tier", ALL_TIERS)
    if tier != ALL_TIERS and tier not in tiers:
        problem(f"tier must be one of {', '.join(tiers)} or {ALL_TIERS!r}")
    kind = entry.get("kind")
    if kind not in KINDS:
        problem(f"kind must be one of {', '.join(KINDS)}")
    target = _target(entry.get("target"), problem)
    window_s = _window(entry.get("window", DEFAULT_WINDOW), max_window_s, problem)
    figure, threshold_ms = _latency_fields(entry, kind, problem)
    if len(problems) > before:
        return None
    return Objective(str(name), str(tier), str(kind), target, window_s, figure, threshold_ms)


def _target(value: object, problem: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        problem("target must be a number between 0 and 1 (exclusive), such as 0.99")
        return 0.0
    return float(value)


def _window(value: object, max_window_s: int, problem: Any) -> int:
    seconds = 0
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif (
        isinstance(value, str)
        and value[:-1].isascii()
        and value[:-1].isdigit()
        and value[-1:] in _UNIT_S
    ):
        seconds = int(value[:-1]) * _UNIT_S[value[-1]]
    if not MIN_WINDOW_S <= seconds <= max_window_s:
        problem(
            f"window must be seconds or a number with s, m, h or d, from {MIN_WINDOW_S // 86_400} "
            f"days to the {max_window_s} s of hour roll-ups kept (METRICS_SLO_HISTORY_S)"
        )
    return seconds


def _latency_fields(
    entry: Mapping[str, object], kind: object, problem: Any
) -> tuple[str | None, float | None]:
    figure = entry.get("figure", FIGURE_LATENCY if kind == LATENCY else None)
    threshold = entry.get("thresholdMs")
    if kind != LATENCY:
        if kind in KINDS and ("figure" in entry or threshold is not None):
            problem("figure and thresholdMs belong to latency objectives only")
        return None, None
    if figure not in FIGURES:
        problem(f"figure must be one of {', '.join(FIGURES)}")
    valid = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if not valid or not 0.001 <= float(threshold) <= 3_600_000:  # type: ignore[arg-type]
        problem("thresholdMs must be a number of milliseconds, from 0.001 to 3600000")
        return str(figure), None
    return str(figure), float(threshold)  # type: ignore[arg-type]


def _repeated(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({name for name in names if name in seen or seen.add(name)})  # type: ignore[func-returns-value]


def threshold_bins(objectives: Sequence[Objective], tier: str) -> dict[str, int]:
    """What a query of `tier` must meet to be good for a combined objective: per figure, the
    highest histogram bin allowed (the tightest latency objective of the tier, or of all
    tiers). A value meets it when its bin is at most that: exactly the values a latency
    objective counts as good, below its effective threshold."""
    found: dict[str, int] = {}
    for objective in objectives:
        index = objective.threshold_bin
        if objective.kind == LATENCY and objective.covers(tier) and index is not None:
            assert objective.figure is not None
            found[objective.figure] = min(index, found.get(objective.figure, index))
    return found


def definitions_schema(tiers: Sequence[str]) -> dict[str, Any]:
    """The JSON Schema of a definitions document (the PUT's OpenAPI body). What it cannot
    state, parse_objectives checks: names used once, a window within the history kept."""
    common: dict[str, Any] = {
        "name": {"type": "string", "pattern": NAME_PATTERN.pattern},
        "tier": {"enum": [*tiers, ALL_TIERS]},
        "target": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "window": {
            "oneOf": [
                {"type": "string", "pattern": "^[0-9]+[smhd]$"},
                {"type": "integer", "minimum": 1},  # seconds
            ],
            "default": DEFAULT_WINDOW,
        },
    }
    latency = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "kind", "target", "thresholdMs"],
        "properties": {
            **common,
            "kind": {"const": LATENCY},
            "figure": {"enum": list(FIGURES), "default": FIGURE_LATENCY},
            "thresholdMs": {"type": "number", "minimum": 0.001, "maximum": 3_600_000},
        },
    }
    counted = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "kind", "target"],
        "properties": {**common, "kind": {"enum": [ERRORS, COMBINED]}},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["objectives"],
        "properties": {
            "objectives": {
                "type": "array",
                "maxItems": MAX_OBJECTIVES,
                "items": {"oneOf": [latency, counted]},
            }
        },
    }
