"""Each objective's good and total counts over its burn windows and its compliance window,
staged on one read, and its budget from them (`GET /api/metrics/slo`).

Every window ends with the current fine bucket and is tiled with the kept buckets, as any
`?window=` is (latency.py): the compliance window of 30 days with the hour roll-ups, which
the collectors keep for `METRICS_SLO_HISTORY_S`. The counts come from what the store already
holds, summed from the reader's copy of the buckets (redis/bucket_cache.py):
- `errors`: the query counters' `count` and `errors` of the tier;
- `latency`: the figure's histogram of the tier, whose bins up to the snapped threshold are
  the good ones;
- `combined`: the query counters' `judged` and `good`, which the collector adds as it writes
  each query it judges (queries never judged are neither good nor bad).
Each window is read once, whatever number of objectives share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metrics_store.read.fleet import Fleet
from metrics_store.read.latency import LatencyPlanner, parse_histogram
from metrics_store.read.shapes import BurnAlert, ObjectiveStatus, SloMetrics
from metrics_store.read.windowed import WindowedStages
from metrics_store.redis.fan_out import FanOutPlan
from metrics_store.redis.keys import (
    QUERY_COUNT,
    QUERY_ERRORS,
    QUERY_GOOD,
    QUERY_JUDGED,
    member,
)
from metrics_store.redis.read_plan import Staged
from metrics_store.settings import Settings
from metrics_store.slo.burn import BURN_WINDOWS_S, Budget, Counts, assess, span
from metrics_store.slo.definitions import COMBINED, LATENCY, Objective
from metrics_store.timefmt import iso_utc

# One read of a window: its query counters (None) or one (figure, tier) histogram.
Read = tuple[int, tuple[str, str] | None]


class SloStages:
    """Stages the objectives' reads on a plan; one per reader."""

    def __init__(
        self, settings: Settings, windowed: WindowedStages, latency: LatencyPlanner
    ) -> None:
        self._settings = settings
        self._windowed = windowed  # a window's query counters, as /queries reads them
        self._latency = latency  # a window's histogram of one figure and tier

    def stage(
        self, plan: FanOutPlan, now_s: float, objectives: Sequence[Objective], version: int
    ) -> Staged[SloMetrics]:
        reads = self._reads(objectives)
        starts: dict[int, int] = {}
        for window_s, histogram in reads:
            tiling = self._latency.tiling(now_s, window_s)
            starts[window_s] = tiling.start_s
            if histogram is None:
                self._windowed.sum_window(plan, "q", now_s, window_s)
            else:
                self._latency.stage_hsum(plan, *histogram, tiling)

        def parse(replies: Sequence[Any]) -> SloMetrics:
            # Each read parsed once, however many objectives share it.
            found = {
                read: _sums(reply) if read[1] is None else parse_histogram(reply)[0]
                for read, reply in zip(reads, replies, strict=True)
            }
            statuses = [
                self._status(objective, found, starts[objective.window_s])
                for objective in objectives
            ]
            return SloMetrics(
                timestamp=iso_utc(now_s), definitionsVersion=version, objectives=statuses
            )

        return Staged(len(reads), parse)

    def _reads(self, objectives: Sequence[Objective]) -> list[Read]:
        """Every distinct read the objectives need, in a fixed order."""
        reads: dict[Read, None] = {}
        for objective in objectives:
            for window_s in (*BURN_WINDOWS_S, objective.window_s):
                if objective.kind == LATENCY:
                    assert objective.figure is not None
                    for tier in self._tiers(objective):
                        reads[window_s, (objective.figure, tier)] = None
                else:
                    reads[window_s, None] = None
        return list(reads)

    def _tiers(self, objective: Objective) -> list[str]:
        return [tier for tier in self._settings.tiers if objective.covers(tier)]

    def _counts(self, objective: Objective, window_s: int, found: dict[Read, Any]) -> Counts:
        good = total = 0
        for tier in self._tiers(objective):
            if objective.kind == LATENCY:
                assert objective.figure is not None and objective.threshold_bin is not None
                bins = found[window_s, (objective.figure, tier)]
                limit = objective.threshold_bin
                total += sum(bins.values())
                good += sum(n for index, n in bins.items() if index <= limit)  # zero bin too
                continue
            sums = found[window_s, None]
            if objective.kind == COMBINED:  # the queries judged as they were written
                total += int(sums.get(member(QUERY_JUDGED, tier), 0))
                good += int(sums.get(member(QUERY_GOOD, tier), 0))
                continue
            count = int(sums.get(member(QUERY_COUNT, tier), 0))
            total += count
            good += count - int(sums.get(member(QUERY_ERRORS, tier), 0))
        return Counts(good, total)

    def _status(
        self, objective: Objective, found: dict[Read, Any], window_start_s: int
    ) -> ObjectiveStatus:
        windows = {span: self._counts(objective, span, found) for span in BURN_WINDOWS_S}
        compliance = self._counts(objective, objective.window_s, found)
        budget = assess(windows, compliance, objective.target, objective.window_s)
        return ObjectiveStatus(
            name=objective.name,
            tier=objective.tier,
            kind=objective.kind,
            figure=objective.figure,
            thresholdMs=objective.threshold_ms,
            effectiveThresholdMs=_rounded(objective.effective_threshold_ms),
            target=objective.target,
            windowSeconds=objective.window_s,
            windowStart=iso_utc(window_start_s),
            good=compliance.good,
            total=compliance.total,
            compliance=compliance.good / compliance.total if compliance.total else None,
            errorBudgetRemaining=round(budget.remaining_ratio, 6),
            exhaustedInSeconds=_rounded(budget.exhausted_in_s),
            burnRates={span(s): _rounded(rate, 6) for s, rate in budget.rates.items()},
            alerts=_alerts(budget),
            state=budget.state,
        )


def _alerts(budget: Budget) -> list[BurnAlert]:
    return [
        BurnAlert(
            windows=state.pair.label,
            factor=state.pair.factor,
            severity=state.pair.severity,
            longRate=_rounded(state.long_rate, 6),
            shortRate=_rounded(state.short_rate, 6),
            firing=state.firing,
        )
        for state in budget.pairs
    ]


def _sums(flat: Sequence[bytes]) -> dict[str, float]:
    return {flat[i].decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def all_time_counts(objective: Objective, fleet: Fleet, tiers: Sequence[str]) -> Counts:
    """The objective's good and total queries since the store began (Prometheus counters):
    from the all-time histograms for a latency objective, the all-time totals otherwise (a
    combined objective's: the queries judged, and the good among them)."""
    good = total = 0.0
    for tier in (t for t in tiers if objective.covers(t)):
        if objective.kind == LATENCY:
            assert objective.figure is not None and objective.threshold_bin is not None
            found = fleet.histograms.get((objective.figure, tier))
            bins = found.bins if found is not None else {}
            total += sum(bins.values())
            good += sum(n for i, n in bins.items() if i <= objective.threshold_bin)
            continue
        if objective.kind == COMBINED:
            total += fleet.totals.judged(tier)
            good += fleet.totals.good(tier)
            continue
        ok, failed = fleet.totals.queries(tier, False), fleet.totals.queries(tier, True)
        total += ok + failed
        good += ok
    return Counts(int(good), int(total))
