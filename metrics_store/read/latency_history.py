"""Latency percentiles over time: a window's chart points, each from the histograms tiling it.

`/latency` answers one distribution per window. Its history is the window cut into the same
points as `/queries?window=` (`windowed.chart_points`: 18 points of window / 18, aligned to
multiples of their length, the last holding now), and each point's p50, p95 and p99 are the
quantiles of the bin sum of the kept histogram buckets that tile that point alone. So a point
says what that stretch of time's own queries did, exactly as `/latency?window=` would over
it, with the same error bound; nothing is sampled by a client, and a page opened now draws
the whole window at once. The bins are summed from the reader's copy of the buckets
(redis/bucket_cache.py) like every other bucket read: the cost is points x tiers bin sums,
whatever the window and the number of events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metrics_store.buckets import bucket_start
from metrics_store.histogram import RELATIVE_ERROR, summarize
from metrics_store.read.latency import LatencyPlanner, parse_histogram, stated_error
from metrics_store.read.shapes import LatencyHistory, LatencyWindow, TierLatencyHistory
from metrics_store.read.windowed import chart_points
from metrics_store.redis.fan_out import FanOutPlan, ShardKeys
from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import Staged
from metrics_store.settings import Settings
from metrics_store.timefmt import iso_utc

# A point's buckets, (size, start) each, tiling it.
PointBuckets = tuple[tuple[int, int], ...]


class LatencyHistoryStages:
    """Stages a window's percentile history of one figure, every tier, on a plan."""

    def __init__(self, settings: Settings, shards: list[Keys], latency: LatencyPlanner) -> None:
        self._settings = settings
        self._shards = shards
        self._latency = latency

    def stage(
        self, plan: FanOutPlan, now_s: float, window_s: int, figure: str
    ) -> Staged[LatencyHistory]:
        starts, point_s, points = chart_points(
            self._settings, self._latency.levels, now_s, window_s
        )
        tiers = self._settings.tiers
        for tier in tiers:
            for buckets in points:
                plan.hsum_shards(self._point_keys(figure, tier, buckets))
        end_s = (
            bucket_start(now_s, self._settings.retention.bucket_s)
            + self._settings.retention.bucket_s
        )

        def parse(replies: Sequence[Any]) -> LatencyHistory:
            entries = [
                _tier_history(tier, replies[t * len(points) : (t + 1) * len(points)])
                for t, tier in enumerate(tiers)
            ]
            return LatencyHistory(
                window=LatencyWindow(
                    seconds=end_s - starts[0], start=iso_utc(starts[0]), end=iso_utc(end_s)
                ),
                figure=figure,
                pointSeconds=point_s,
                timestamps=[iso_utc(start) for start in starts],
                relativeError=max([RELATIVE_ERROR, *(e.relativeError for e in entries)]),
                tiers=entries,
            )

        return Staged(len(tiers) * len(points), parse)

    def _point_keys(self, figure: str, tier: str, buckets: PointBuckets) -> ShardKeys:
        """The point's histogram keys on shard i."""

        def keys(i: int) -> list[str]:
            name = self._shards[i].histogram_bucket
            return [name(figure, tier, size, start) for size, start in buckets]

        return keys


def _tier_history(tier: str, replies: Sequence[Sequence[bytes]]) -> TierLatencyHistory:
    counts: list[int] = []
    quantiles: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
    for flat in replies:
        summary = summarize(*parse_histogram(flat))
        counts.append(summary.count)
        for name, values in quantiles.items():
            values.append(getattr(summary, name) if summary.count else None)
    return TierLatencyHistory(
        name=tier,
        relativeError=max([RELATIVE_ERROR, *(stated_error(flat) for flat in replies)]),
        count=counts,
        **quantiles,
    )
