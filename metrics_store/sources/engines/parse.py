"""An engine's /metrics answer as series, read by prometheus_client's own parsers.

Prometheus text (version 0.0.4) and OpenMetrics are both read, by the answer's Content-Type;
neither is parsed by hand. Only the counters and classic histograms the table names
(names.py) are kept, each with its start where the exposition tells it: a series' `_created`
sample (a family `<name>_created` of its own in the text format), else the process's
`process_start_time_seconds`. A start that changes is a restart (temporality.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

OPENMETRICS = "application/openmetrics-text"
# Text first: what every engine serves; OpenMetrics where an engine answers with it alone.
ACCEPT = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
PROCESS_START = "process_start_time_seconds"
CREATED = "_created"

Labels = tuple[tuple[str, str], ...]


class Unreadable(ValueError):
    """An answer the Prometheus parsers refuse, or a series no engine can expose."""


@dataclass(frozen=True)
class Series:
    """One counter or classic histogram of one label set, as the engine exposed it."""

    family: str  # a counter's without `_total`, as the parsers name its family
    kind: str  # "counter" or "histogram"
    labels: Labels  # sorted, `le` left out
    value: float  # a counter's value; a histogram's count (its +Inf bucket)
    total: float = 0.0  # a histogram's sum
    bounds: tuple[float, ...] = ()  # a histogram's finite upper bounds, increasing
    counts: tuple[int, ...] = ()  # a histogram's count per bucket (not cumulative), +Inf last
    start_s: float | None = None  # when the series (or its process) started, if told

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def parse(text: str, content_type: str | None, wanted: Collection[str]) -> list[Series]:
    """The series of the `wanted` families in an exposition; Unreadable if it is not one."""
    openmetrics = (content_type or "").lower().startswith(OPENMETRICS)
    try:
        families = list((openmetrics_families if openmetrics else text_families)(text))
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # what the parsers raise
        kind = "OpenMetrics" if openmetrics else "Prometheus text"
        raise Unreadable(f"not {kind}: {exc}") from exc
    created = _created_gauges(families)
    process_start = _process_start(families)
    out: list[Series] = []
    for family in families:
        name = _family_name(family)
        if name not in wanted:
            continue
        found = _counters(family, name) if family.type == "counter" else _histograms(family)
        for series, start_s in found:
            start_s = start_s or created.get((name, series.labels)) or process_start
            out.append(_with_start(series, start_s))
    return out


def _family_name(family: Metric) -> str:
    # Older parsers keep a counter's `_total` in its family name; newer ones take it off.
    return family.name.removesuffix("_total") if family.type == "counter" else family.name


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def _created_gauges(families: Iterable[Metric]) -> dict[tuple[str, Labels], float]:
    """The text format's `<family>_created` gauges, by (family, labels)."""
    return {
        (family.name.removesuffix(CREATED), _labels(sample.labels)): sample.value
        for family in families
        if family.type == "gauge" and family.name.endswith(CREATED)
        for sample in family.samples
    }


def _process_start(families: Iterable[Metric]) -> float | None:
    for family in families:
        if family.name == PROCESS_START and family.samples:
            return float(family.samples[0].value)
    return None


def _with_start(series: Series, start_s: float | None) -> Series:
    if start_s == series.start_s:
        return series
    return Series(series.family, series.kind, series.labels, series.value, series.total,
                  series.bounds, series.counts, start_s)  # fmt: skip


def _counters(family: Metric, name: str) -> list[tuple[Series, float | None]]:
    values: dict[Labels, float] = {}
    starts: dict[Labels, float] = {}
    for sample in family.samples:
        labels = _labels(sample.labels)
        if sample.name.endswith(CREATED):
            starts[labels] = sample.value
        else:
            values[labels] = _checked(sample.value, family.name)
    return [(Series(name, "counter", labels, value), starts.get(labels))
            for labels, value in values.items()]  # fmt: skip


def _histograms(family: Metric) -> list[tuple[Series, float | None]]:
    """A classic histogram's series: cumulative `le` buckets made per-bucket counts."""
    if family.type != "histogram":
        return []  # a summary or gauge under a name of ours: nothing to take
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    sums: dict[Labels, float] = {}
    starts: dict[Labels, float] = {}
    for sample in family.samples:
        labels = _labels(sample.labels)
        suffix = sample.name[len(family.name) :]
        if suffix == "_bucket":
            le = float(sample.labels["le"])
            buckets.setdefault(labels, []).append((le, _checked(sample.value, family.name)))
        elif suffix == "_sum":
            sums[labels] = _checked(sample.value, family.name)
        elif suffix == CREATED:
            starts[labels] = sample.value
    return [
        (_histogram(family.name, labels, found, sums.get(labels, 0.0)), starts.get(labels))
        for labels, found in buckets.items()
    ]


def _histogram(
    name: str, labels: Labels, buckets: list[tuple[float, float]], total: float
) -> Series:
    buckets.sort()
    if not buckets or not math.isinf(buckets[-1][0]):
        raise Unreadable(f"{name}: a histogram without its +Inf bucket")
    cumulative = [round(count) for _, count in buckets]
    counts = [cumulative[0]] + [b - a for a, b in itertools.pairwise(cumulative)]
    if any(count < 0 for count in counts):
        raise Unreadable(f"{name}: cumulative buckets that go down")
    bounds = tuple(le for le, _ in buckets[:-1])
    return Series(name, "histogram", labels, float(cumulative[-1]), total, bounds, tuple(counts))


def _checked(value: float, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise Unreadable(f"{name}: a value of {value!r}; counters and buckets are >= 0")
    return value
