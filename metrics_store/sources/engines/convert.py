"""Scraped series as placed cumulative points: the OTLP receiver's `Placed`, one per series.

Each series is a cumulative stream of its own (engine URL, family, labels), so the OTLP
temporality (sources/otlp/temporality.py) makes it a delta, any process taking the next
scrape, and sees a restart where a value goes down or the series' start changes. A classic
histogram converts as OTLP's explicit buckets do (sources/otlp/convert.py `explicit_bins`),
with its own error, stated by /latency; a counter is a count (and a sum, for tokens).

The tier: `--tier` (METRICS_SCRAPE_TIER) for every series, else the series' tier label
(METRICS_SCRAPE_TIER_LABEL, model_name) through METRICS_OTLP_TIER_MAP, as OTLP's attribute
is. A series that maps to no tier is counted (`unmapped`), never dropped silently.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from metrics_store.settings import Settings
from metrics_store.sources.engines.names import Taken, chosen
from metrics_store.sources.engines.parse import Series
from metrics_store.sources.otlp.convert import Bins, explicit_bins
from metrics_store.sources.otlp.mapping import (
    LATENCY,
    QUEUE,
    TPOT,
    TTFT,
    ExportMapper,
    Placed,
)

# The figures a histogram of durations (s) feeds; every other row takes a counter's value.
DURATIONS = frozenset({LATENCY, TTFT, QUEUE, TPOT})


@dataclass
class Placing:
    """One scrape's points, and the series that mapped to no tier."""

    points: list[Placed] = field(default_factory=list)
    unmapped: Counter[str] = field(default_factory=Counter)  # "<url> <family> <value>"


def stream_id(url: str, family: str, labels: Sequence[tuple[str, str]]) -> str:
    """A scraped series' cumulative stream: its engine, family and labels."""
    parts = ("engine", url, family, tuple(labels))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


class SeriesMapper:
    """Places scraped series by the settings' tier (or tier label and map) and node."""

    def __init__(self, settings: Settings, tier: str | None = None) -> None:
        self._tier = tier or settings.scrape.tier
        self._label = settings.scrape.tier_label
        self._tiers = ExportMapper(settings)  # the tier map and the tiers, as for OTLP
        self._node = settings.node

    def place(self, url: str, series: Sequence[Series], now_ns: int) -> Placing:
        out = Placing()
        rows = chosen({s.family for s in series})
        for row, name in rows:
            for one in series:
                if one.family == name and _selected(row, one):
                    self._place(url, row, one, now_ns, out)
        return out

    def _place(self, url: str, row: Taken, series: Series, now_ns: int, out: Placing) -> None:
        value = series.label_map.get(self._label)
        tier = self._tier or self._tiers.tier_of(value)
        if tier is None:
            out.unmapped[f"{url} {series.family} {value or '-'}"] += 1
            return
        start_ns = int(series.start_s * 1e9) if series.start_s else 0
        stream = stream_id(url, series.family, series.labels)
        point = Placed(stream, self._node, tier, row.role, False, True, start_ns, now_ns,
                       _bins(row, series))  # fmt: skip
        out.points.append(point)


def _selected(row: Taken, series: Series) -> bool:
    """The row's label values, and the kind its figure needs (a name reused as a gauge or a
    summary is not ours)."""
    kind = "histogram" if row.role in DURATIONS or row.sum_only else "counter"
    labels = series.label_map
    return series.kind == kind and all(labels.get(k) == v for k, v in row.labels.items())


def _bins(row: Taken, series: Series) -> Bins:
    """The series in our bins: durations (s) per bucket; counts and tokens as totals."""
    if series.kind == "counter":
        return Bins(count=round(series.value), total=series.value)
    if row.sum_only:
        return Bins(count=round(series.value), total=series.total)
    return explicit_bins(series.bounds, series.counts, round(series.value), series.total * 1000.0)
