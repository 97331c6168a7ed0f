"""Whether a query met every objective of its tier, judged as the collector writes it.

A combined objective, and goodput, count the queries that did not fail and met each latency
threshold of their tier. Only the writer sees one query's figures together (the histograms
keep each figure apart), so the collector judges each query with the objectives of that
moment and adds `good:<tier>` to the bucket counters beside `count:<tier>`. History is not
rewritten when the objectives change.

The collector's upkeep refreshes the objectives once a beat (one HGET of their version; the
definitions only when it moved), so a PUT reaches every collector within seconds. A tier no
objective covers is not judged: no `good` counter, and its goodput is null rather than 0.

A threshold is met when the value's histogram bin is at most the threshold's bin: exactly the
values a latency objective counts as good below its effective threshold. A figure the query
did not measure (no TTFT) is not held against it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import redis

from metrics_store.errors import InvalidObjectives
from metrics_store.histogram import bin_index
from metrics_store.record.events import QueryEvent, tpot_ms
from metrics_store.redis.keys import (
    ALL_TIME_FIGURES,
    FIGURE_LATENCY,
    FIGURE_QUEUE,
    FIGURE_TPOT,
    FIGURE_TTFT,
)
from metrics_store.settings import Settings
from metrics_store.slo import store
from metrics_store.slo.definitions import Objective, threshold_bins

log = logging.getLogger("metrics_store.slo")

# Per judged tier: figure -> the highest bin a good query's value may fall in.
Thresholds = Mapping[str, Mapping[str, int]]


def thresholds_of(
    objectives: Sequence[Objective], tiers: Sequence[str]
) -> dict[str, dict[str, int]]:
    """The judged tiers (those some objective covers) and their latency thresholds."""
    return {
        tier: threshold_bins(objectives, tier)
        for tier in tiers
        if any(objective.covers(tier) for objective in objectives)
    }


def is_good(event: QueryEvent, thresholds: Mapping[str, int]) -> bool:
    """Whether the query did not fail and met each threshold of its tier (a figure it does
    not carry is not held against it)."""
    _, _, _, latency, tokens, _, error, ttft, queue = event
    if error:
        return False
    carried = {
        FIGURE_LATENCY: latency,
        FIGURE_TTFT: ttft,
        FIGURE_QUEUE: queue,
        FIGURE_TPOT: tpot_ms(latency, tokens, ttft),
    }
    for figure, limit in thresholds.items():
        value = carried[figure]
        if value is not None and bin_index(value) > limit:
            return False
    return True


class QueryJudge:
    """The thresholds a collector judges its queries with, kept up to date by its upkeep."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._version = 0
        # Replaced whole, never changed in place: the flusher reads them while upkeep refreshes.
        self.thresholds: Thresholds = {}
        # The figures kept for all time: the Prometheus histograms', and any figure a latency
        # objective counts (its llm_slo_good_total); the others' bins cost no all-time write.
        self.all_time_figures: frozenset[str] = frozenset(ALL_TIME_FIGURES)

    def refresh(self, client: redis.Redis) -> None:
        """Take the stored objectives if their version moved (one HGET otherwise)."""
        try:
            stored = store.load_sync(client, self._settings, self._version)
        except InvalidObjectives as exc:  # stored by a process with other tiers or history
            log.error("the stored objectives do not fit this collector's settings: %s", exc)
            self._version = store.stored_version(client, self._settings)  # once per version
            return
        if stored is None:
            return
        self.thresholds = thresholds_of(stored.objectives, self._settings.tiers)
        figures = {o.figure for o in stored.objectives if o.figure is not None}
        self.all_time_figures = frozenset(ALL_TIME_FIGURES) | figures
        self._version = stored.version
