"""The counters of a window, staged for one read: `/queries`, `/tiers` and `/routing`.

Each sums the window's buckets (the fine buckets and rollups that tile it, on every shard),
from the reader's copy of them (redis/bucket_cache.py), so an answer costs Redis the writes
since the last answer, never O(events) nor O(window). The default window reads the fine
buckets whose names are cached for the current bucket; a `?window=` tiles its buckets with
the history rollups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from metrics_store.buckets import Level, bucket_start, chart_starts, plan_window, tile_window
from metrics_store.read import aggregates
from metrics_store.read.latency import LatencyPlanner
from metrics_store.read.shapes import Distribution, QueryMetrics, RoutingMetrics, TierMetrics
from metrics_store.redis.fan_out import FanOutPlan, ShardKeys
from metrics_store.redis.keys import QUERY_COUNT, Keys, member
from metrics_store.redis.read_plan import Staged, pairs
from metrics_store.settings import Settings


@dataclass(frozen=True)
class BucketKeys:
    """Encoded bucket names: those tiling the window, and the chart's fine buckets."""

    window: list[bytes]
    chart: list[bytes]


def _sums(flat: Sequence[bytes]) -> dict[str, float]:
    """A window sum, flat [member, total, ...], as counter name -> total."""
    return {flat[i].decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def chart_points(
    settings: Settings, levels: list[Level], now_s: float, window_s: int
) -> tuple[list[int], int, list[tuple[tuple[int, int], ...]]]:
    """A window's chart: chart_points points, each window / points long, the last holding
    now; each point's buckets (size, start) tile it (/queries' queryRate, latency history).

    A point is rounded up to whole fine buckets, and to whole 10-minute rollups where the
    window reaches past the fine buckets' retention; points start at multiples of their
    length since the epoch, like buckets, so that every point tiles with kept buckets.
    """
    retention = settings.retention
    point_s = _round_up(-(-window_s // retention.chart_points), retention.bucket_s)
    if window_s + 2 * point_s > retention.retention_s:  # the oldest point may outlive fine buckets
        point_s = _round_up(point_s, levels[2].size_s)
    end = bucket_start(now_s, retention.bucket_s) + retention.bucket_s
    current = bucket_start(now_s, point_s)
    starts = [
        current - point_s * (retention.chart_points - 1 - i) for i in range(retention.chart_points)
    ]
    tilings = []
    for start in starts:
        point_end = min(start + point_s, end)
        tiling = tile_window(point_end, point_end - start, now_s, levels)
        tilings.append(tiling.buckets)
    return starts, point_s, tilings


class WindowedStages:
    """Stages the window counters of `/queries`, `/tiers` and `/routing` on a plan."""

    def __init__(self, settings: Settings, shards: list[Keys], latency: LatencyPlanner) -> None:
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self._shards = shards
        self._latency = latency
        self._key_cache: dict[tuple[str, int], list[BucketKeys]] = {}
        self._count_members = [member(QUERY_COUNT, tier).encode() for tier in settings.tiers]

    def _bucket_keys(self, kind: str, bucket: int) -> list[BucketKeys]:
        """Per shard, the keys of the window (and chart) ending with the fine bucket at `bucket`.

        Cached per bucket: the same few dozen names serve every request of those 10 seconds,
        already encoded, so the request path neither formats nor encodes them again.
        """
        cached = self._key_cache.get((kind, bucket))
        if cached is None:
            if len(self._key_cache) > 8:  # only the current bucket's entries are ever wanted
                self._key_cache.clear()
            cached = [self._shard_bucket_keys(shard, kind, bucket) for shard in self._shards]
            self._key_cache[kind, bucket] = cached
        return cached

    def _shard_bucket_keys(self, shard: Keys, kind: str, bucket: int) -> BucketKeys:
        s = self._settings
        name = shard.query_bucket if kind == "q" else shard.routing_bucket
        plan = plan_window(bucket, s.retention.bucket_s, s.retention.rollup_s, s.retention.window_s)
        window = [name(s.retention.bucket_s, start) for start in plan.fine_starts]
        window += [name(s.retention.rollup_s, start) for start in plan.rollup_starts]
        chart = [
            name(s.retention.bucket_s, start)
            for start in chart_starts(bucket, s.retention.bucket_s, s.retention.chart_points)
        ]
        return BucketKeys([k.encode() for k in window], [k.encode() for k in chart])

    def sum_window(
        self, plan: FanOutPlan, kind: str, now_s: float, window_s: int | None = None
    ) -> None:
        """Every counter summed over the window's buckets (of every shard)."""
        if window_s is None:
            keys = self._bucket_keys(kind, bucket_start(now_s, self._settings.retention.bucket_s))
            plan.sum_shards(lambda i: keys[i].window)
            return
        tiling = self._latency.tiling(now_s, window_s)

        def window(i: int) -> list[str]:
            shard = self._shards[i]
            name = shard.query_bucket if kind == "q" else shard.routing_bucket
            return [name(size, start) for size, start in tiling.buckets]

        plan.sum_shards(window)

    def queries(
        self, plan: FanOutPlan, now_s: float, window_s: int | None = None
    ) -> Staged[QueryMetrics]:
        s = self._settings
        if window_s is None:
            starts = chart_starts(now_s, s.retention.bucket_s, s.retention.chart_points)
            point_s = s.retention.bucket_s
            sizes = [1] * len(starts)  # one fine bucket per point
            cached = self._bucket_keys("q", starts[-1])
            chart_keys: ShardKeys = lambda i: cached[i].chart  # noqa: E731
        else:
            starts, point_s, tilings = chart_points(s, self._latency.levels, now_s, window_s)
            sizes = [len(tiling) for tiling in tilings]

            def chart_keys(i: int) -> list[str]:
                bucket = self._shards[i].query_bucket
                return [bucket(size, at) for tiling in tilings for size, at in tiling]

        self.sum_window(plan, "q", now_s, window_s)
        plan.totals_shards(chart_keys, sum(sizes), self._count_members)

        def parse(replies: Sequence[Any]) -> QueryMetrics:
            totals = iter(float(total) for total in replies[1])
            chart = [sum(next(totals) for _ in range(size)) for size in sizes]
            window = _sums(replies[0])
            return aggregates.query_metrics(s.tiers, starts, chart, window, now_s, point_s)

        return Staged(2, parse)

    def tiers(
        self, plan: FanOutPlan, now_s: float, window_s: int | None = None
    ) -> Staged[list[TierMetrics]]:
        s = self._settings
        self.sum_window(plan, "q", now_s, window_s)
        for tier in s.tiers:
            plan.newest_shards(partial(self._recent_queries, tier), s.retention.sparkline_points)
        percentiles = self._latency.stage_percentiles(plan, now_s, window_s or s.retention.window_s)

        def parse(replies: Sequence[Any]) -> list[TierMetrics]:
            recent = dict(zip(s.tiers, replies[1 : 1 + len(s.tiers)], strict=True))
            latency: dict[str, Distribution] = percentiles.parse(replies[1 + len(s.tiers) :])
            seconds = window_s or s.retention.window_s
            entries = aggregates.tier_metrics(s.tiers, _sums(replies[0]), recent, seconds)
            return [
                entry.model_copy(
                    update={
                        "p50LatencyMs": latency[entry.name].p50,
                        "p95LatencyMs": latency[entry.name].p95,
                        "p99LatencyMs": latency[entry.name].p99,
                    }
                )
                for entry in entries
            ]

        return Staged(1 + len(s.tiers) + percentiles.commands, parse)

    def routing(
        self, plan: FanOutPlan, now_s: float, window_s: int | None = None
    ) -> Staged[RoutingMetrics]:
        s = self._settings
        self.sum_window(plan, "r", now_s, window_s)
        plan.since(self._keys.live_nodes, s.liveness.node_ttl_s)  # liveness: Redis's clock
        plan.hgetall(self._keys.availability)

        def parse(replies: Sequence[Any]) -> RoutingMetrics:
            live = {node.decode() for node in replies[1]}
            availability = aggregates.parse_availability(pairs(replies[2]), live, s.tiers)
            return aggregates.routing_metrics(
                s.complexities, s.tiers, _sums(replies[0]), availability
            )

        return Staged(3, parse)

    def _recent_queries(self, tier: str, shard: int) -> str:
        return self._shards[shard].recent_queries(tier)
