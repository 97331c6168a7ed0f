"""Read the latency histograms of a window: one bin sum per (tier, figure) on the answer's plan.

The collectors write each figure's bins per tier into buckets of every level (batch.py); a
window is tiled with as few kept buckets as possible (buckets.tile_window), and their bins are
summed from the reader's copy of them (redis/bucket_cache.py), brought up to date in the
answer's one read call, so the answer costs Redis the same whatever the window. On Redis
Cluster each shard holds its own histograms (they are data keys): the bins of every shard are
added, exactly, as counts are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metrics_store.buckets import Level, Tiling, bucket_levels, bucket_start, tile_window
from metrics_store.histogram import RELATIVE_ERROR, relative_error_with, summarize
from metrics_store.read.shapes import Distribution, LatencyMetrics, LatencyWindow, TierLatency
from metrics_store.redis.fan_out import FanOutPlan
from metrics_store.redis.keys import (
    FIGURE_LATENCY,
    FIGURE_QUEUE,
    FIGURE_TPOT,
    FIGURE_TTFT,
    FIGURES,
    HISTOGRAM_ERROR,
    HISTOGRAM_SUM,
    Keys,
)
from metrics_store.redis.read_plan import Staged
from metrics_store.settings import Settings
from metrics_store.timefmt import iso_utc

HISTOGRAM_SUM_BYTES = HISTOGRAM_SUM.encode()
HISTOGRAM_ERROR_BYTES = HISTOGRAM_ERROR.encode()


def parse_histogram(flat: Sequence[bytes]) -> tuple[dict[int, int], float]:
    """A bin sum [field, total, ...] as (bin -> count, sum of the values in ms)."""
    bins: dict[int, int] = {}
    total_ms = 0.0
    for i in range(0, len(flat), 2):
        if flat[i] == HISTOGRAM_SUM_BYTES:
            total_ms = float(flat[i + 1])
        elif not flat[i].startswith(HISTOGRAM_ERROR_BYTES):
            bins[int(flat[i])] = int(float(flat[i + 1]))
    return bins, total_ms


def stated_error(flat: Sequence[bytes]) -> float:
    """The relative error of the histogram's quantiles: ours, or more where some of its values
    came from a coarser histogram (field "err:<ppm>", keys.py)."""
    worst = 0
    for i in range(0, len(flat), 2):
        if flat[i].startswith(HISTOGRAM_ERROR_BYTES) and float(flat[i + 1]) > 0:
            worst = max(worst, int(flat[i][len(HISTOGRAM_ERROR_BYTES) :]))
    return relative_error_with(worst / 1_000_000)


def distribution(flat: Sequence[bytes]) -> Distribution:
    """The contract's D for one figure of one tier, from its bin sum."""
    bins, total_ms = parse_histogram(flat)
    summary = summarize(bins, total_ms)
    return Distribution(**summary.__dict__)


class LatencyPlanner:
    """Stages latency reads on a ReadPlan; one per reader (it caches the window's keys)."""

    def __init__(
        self, settings: Settings, keys: Keys, shards: Sequence[Keys] | None = None
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._shards = list(shards) if shards is not None else [keys]
        self.levels: list[Level] = bucket_levels(
            settings.retention.bucket_s,
            settings.retention.rollup_s,
            settings.retention.retention_s,
            settings.retention.history_s,
            settings.slo.history_s,
        )
        self._cache: dict[tuple[int, int], Tiling] = {}

    def tiling(self, now_s: float, window_s: int) -> Tiling:
        """The kept buckets tiling the window that ends with the current fine bucket."""
        end = (
            bucket_start(now_s, self._settings.retention.bucket_s)
            + self._settings.retention.bucket_s
        )
        found = self._cache.get((end, window_s))
        if found is None:
            if len(self._cache) > 16:  # only the current bucket's windows are ever wanted
                self._cache.clear()
            found = self._cache[end, window_s] = tile_window(end, window_s, now_s, self.levels)
        return found

    def histogram_keys(
        self, figure: str, tier: str, tiling: Tiling, shard: Keys | None = None
    ) -> list[str]:
        name = (shard or self._keys).histogram_bucket
        return [name(figure, tier, size, start) for size, start in tiling.buckets]

    def stage_hsum(self, plan: FanOutPlan, figure: str, tier: str, tiling: Tiling) -> None:
        """The figure's bins over the buckets tiling the window, summed over the shards."""
        plan.hsum_shards(lambda i: self.histogram_keys(figure, tier, tiling, self._shards[i]))

    def stage_percentiles(
        self, plan: FanOutPlan, now_s: float, window_s: int
    ) -> Staged[dict[str, Distribution]]:
        """Each tier's latency distribution over the window (for /tiers)."""
        tiling = self.tiling(now_s, window_s)
        tiers = self._settings.tiers
        for tier in tiers:
            self.stage_hsum(plan, FIGURE_LATENCY, tier, tiling)

        def parse(replies: Sequence[Any]) -> dict[str, Distribution]:
            return {tier: distribution(reply) for tier, reply in zip(tiers, replies, strict=True)}

        return Staged(len(tiers), parse)

    def stage(self, plan: FanOutPlan, now_s: float, window_s: int) -> Staged[LatencyMetrics]:
        """The /latency answer: every figure of every tier over the window."""
        tiling = self.tiling(now_s, window_s)
        tiers = self._settings.tiers
        for tier in tiers:
            for figure in FIGURES:
                self.stage_hsum(plan, figure, tier, tiling)

        def parse(replies: Sequence[Any]) -> LatencyMetrics:
            entries = []
            for t, tier in enumerate(tiers):
                found = dict(zip(FIGURES, replies[t * len(FIGURES) :], strict=False))
                entries.append(_tier_latency(tier, found))
            window = LatencyWindow(
                seconds=tiling.end_s - tiling.start_s,
                start=iso_utc(tiling.start_s),
                end=iso_utc(tiling.end_s),
            )
            worst = max([RELATIVE_ERROR, *(entry.relativeError for entry in entries)])
            return LatencyMetrics(window=window, relativeError=worst, tiers=entries)

        return Staged(len(tiers) * len(FIGURES), parse)


def _tier_latency(tier: str, replies: dict[str, Sequence[bytes]]) -> TierLatency:
    def optional(figure: str) -> Distribution | None:
        found = distribution(replies[figure])
        return found if found.count else None

    return TierLatency(
        name=tier,
        relativeError=max(stated_error(reply) for reply in replies.values()),
        latencyMs=distribution(replies[FIGURE_LATENCY]),
        ttftMs=optional(FIGURE_TTFT),
        queueTimeMs=optional(FIGURE_QUEUE),
        tpotMs=optional(FIGURE_TPOT),
    )
