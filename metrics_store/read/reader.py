"""Read the windowed aggregates from Redis: a bounded number of keys per answer, one round trip.

Each aggregate is staged as a few reads on a ReadPlan plus a parser of their replies; a plan
runs as one call of lua/read.lua, so the REST endpoints and the live update (all four at once)
share the same code and cost one command each. On Redis Cluster the reads run on every
primary at once, each over the shards it serves, and are merged (metrics_store/redis/fan_out.py,
`metrics_store.redis.topology`): one call per primary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from metrics_store.buckets import bucket_start, chart_starts, plan_window, tile_window
from metrics_store.clock import Clock, SystemClock
from metrics_store.errors import StoreUnavailable, UnknownNode
from metrics_store.live.live_store import read_connections
from metrics_store.live.snapshots import read_live_snapshots
from metrics_store.read import aggregates
from metrics_store.read.fleet import AllTimeHistogram, Fleet, Totals
from metrics_store.read.health import stage_health
from metrics_store.read.latency import LatencyPlanner
from metrics_store.read.resources import resource_metrics
from metrics_store.read.shapes import (
    Distribution,
    HealthStatus,
    LatencyMetrics,
    MetricsUpdate,
    QueryMetrics,
    ResourceMetrics,
    RoutingMetrics,
    TierMetrics,
    TiersResponse,
)
from metrics_store.redis.fan_out import FanOutPlan, NodeGroup, ShardKeys
from metrics_store.redis.keys import ALL_TIME_FIGURES, QUERY_COUNT, Keys, member
from metrics_store.redis.read_plan import ReadPlan, Staged, pairs, parse_staged
from metrics_store.redis.topology import topology_for
from metrics_store.settings import Settings
from metrics_store.timefmt import iso_utc

log = logging.getLogger(__name__)
T = TypeVar("T")
Stage = Callable[[FanOutPlan, float], Staged[T]]


@dataclass(frozen=True)
class BucketKeys:
    """Encoded bucket names: those tiling the window, and the chart's fine buckets."""

    window: list[bytes]
    chart: list[bytes]


def _sums(flat: Sequence[bytes]) -> dict[str, float]:
    """A ZUNION ... WITHSCORES reply, [member, score, ...], as counter name -> total."""
    return {flat[i].decode(): float(flat[i + 1]) for i in range(0, len(flat), 2)}


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


class MetricsReader:
    """Computes the API's aggregates from Redis.

    >>> reader = MetricsReader(async_client(settings), settings)
    >>> (await reader.queries()).totalQueries
    """

    def __init__(
        self, client: aioredis.Redis, settings: Settings, clock: Clock | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock or SystemClock()
        self._keys = Keys(settings.key_prefix)
        self._topology = topology_for(settings)
        self._shards = self._topology.shards
        self._key_cache: dict[tuple[str, int], list[BucketKeys]] = {}
        self._count_members = [member(QUERY_COUNT, tier).encode() for tier in settings.tiers]
        self._latency = LatencyPlanner(settings, self._keys, self._shards)
        # Cluster: the shards seen holding data (read); the others are only probed (fan_out.py).
        self._written_shards: set[int] = set()

    # --- public: one aggregate, or all at once ---------------------------------------------
    # `window_s` None is the default window (settings.window_s) and today's 18 fine buckets of
    # queryRate; a window (windows.parse_window) tiles its buckets with the history rollups.
    async def queries(self, window_s: int | None = None) -> QueryMetrics:
        return await self._run_one(lambda plan, now: self._stage_queries(plan, now, window_s))

    async def tiers(self, window_s: int | None = None) -> TiersResponse:
        tiers = await self._run_one(lambda plan, now: self._stage_tiers(plan, now, window_s))
        return TiersResponse(tiers=tiers)

    async def routing(self, window_s: int | None = None) -> RoutingMetrics:
        return await self._run_one(lambda plan, now: self._stage_routing(plan, now, window_s))

    async def latency(self, window_s: int | None = None) -> LatencyMetrics:
        """Latency, TTFT, queue time and time per output token per tier, over the window."""
        return await self._run_one(lambda plan, now: self._stage_latency(plan, now, window_s))

    async def resources(self, node: str | None = None) -> ResourceMetrics:
        """The cluster's resources, or (with `node`) that live node's alone."""
        metrics = await self._run_one(self._stage_resources)
        if node is None:
            return metrics
        for entry in metrics.nodes:
            if entry.node == node:
                fields = entry.model_dump(exclude={"node", "sampledAt", "gpus"})
                return ResourceMetrics(**fields, nodes=[entry])
        raise UnknownNode(node)

    async def health(self) -> HealthStatus:
        """Who is alive, and what each live collector has written, dropped and holds."""
        return await self._run_one(self._stage_health)

    async def fleet(self) -> Fleet:
        """Everything `/metrics` exposes, in one bounded read."""
        return await self._run_one(self._stage_fleet)

    async def update(self, now_s: float | None = None) -> MetricsUpdate:
        """Everything the live stream sends, read in a single round trip, as of `now_s`."""
        if now_s is None:
            now_s = self._clock.now()
        stages = (
            self._stage_queries,
            self._stage_tiers,
            self._stage_resources,
            self._stage_routing,
            self._stage_latency,
        )
        queries, tiers, resources, routing, latency = await self._run(stages, now_s)
        return MetricsUpdate(
            timestamp=iso_utc(now_s),
            queries=queries,
            tiers=tiers,
            resources=resources,
            routing=routing,
            latency=latency,
        )

    # --- staging ---------------------------------------------------------------------------------
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

    def _sum_window(
        self, plan: FanOutPlan, kind: str, now_s: float, window_s: int | None = None
    ) -> None:
        """Every counter summed over the window's buckets, by Redis itself (ZUNION sums)."""
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

    def _stage_queries(
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
            starts, point_s, tilings = self._chart_points(now_s, window_s)
            sizes = [len(tiling) for tiling in tilings]

            def chart_keys(i: int) -> list[str]:
                bucket = self._shards[i].query_bucket
                return [bucket(size, at) for tiling in tilings for size, at in tiling]

        self._sum_window(plan, "q", now_s, window_s)
        plan.totals_shards(chart_keys, sum(sizes), self._count_members)

        def parse(replies: Sequence[Any]) -> QueryMetrics:
            totals = iter(float(total) for total in replies[1])
            chart = [sum(next(totals) for _ in range(size)) for size in sizes]
            window = _sums(replies[0])
            return aggregates.query_metrics(s.tiers, starts, chart, window, now_s, point_s)

        return Staged(2, parse)

    def _chart_points(
        self, now_s: float, window_s: int
    ) -> tuple[list[int], int, list[tuple[tuple[int, int], ...]]]:
        """queryRate of a window: chart_points points, each window / points long, the last
        holding now; each point's buckets (size, start) tile it.

        A point is rounded up to whole fine buckets, and to whole 10-minute rollups where the
        window reaches past the fine buckets' retention; points start at multiples of their
        length since the epoch, like buckets, so that every point tiles with kept buckets.
        """
        s = self._settings
        point_s = _round_up(-(-window_s // s.retention.chart_points), s.retention.bucket_s)
        if (
            window_s + 2 * point_s > s.retention.retention_s
        ):  # the oldest point may outlive fine buckets
            point_s = _round_up(point_s, self._latency.levels[2].size_s)
        end = bucket_start(now_s, s.retention.bucket_s) + s.retention.bucket_s
        current = bucket_start(now_s, point_s)
        starts = [
            current - point_s * (s.retention.chart_points - 1 - i)
            for i in range(s.retention.chart_points)
        ]
        tilings = []
        for start in starts:
            point_end = min(start + point_s, end)
            tiling = tile_window(point_end, point_end - start, now_s, self._latency.levels)
            tilings.append(tiling.buckets)
        return starts, point_s, tilings

    def _stage_tiers(
        self, plan: FanOutPlan, now_s: float, window_s: int | None = None
    ) -> Staged[list[TierMetrics]]:
        s = self._settings
        self._sum_window(plan, "q", now_s, window_s)
        for tier in s.tiers:
            plan.newest_shards(partial(self._recent_queries, tier), s.retention.sparkline_points)
        percentiles = self._latency.stage_percentiles(plan, now_s, window_s or s.retention.window_s)

        def parse(replies: Sequence[Any]) -> list[TierMetrics]:
            recent = dict(zip(s.tiers, replies[1 : 1 + len(s.tiers)], strict=True))
            latency: dict[str, Distribution] = percentiles.parse(replies[1 + len(s.tiers) :])
            entries = aggregates.tier_metrics(s.tiers, _sums(replies[0]), recent)
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

    def _stage_latency(
        self, plan: FanOutPlan, now_s: float, window_s: int | None = None
    ) -> Staged[LatencyMetrics]:
        return self._latency.stage(plan, now_s, window_s or self._settings.retention.window_s)

    def _stage_routing(
        self, plan: FanOutPlan, now_s: float, window_s: int | None = None
    ) -> Staged[RoutingMetrics]:
        s = self._settings
        self._sum_window(plan, "r", now_s, window_s)
        plan.since(self._keys.live_nodes, s.liveness.node_ttl_s)  # liveness: Redis's clock
        plan.hgetall(self._keys.availability)

        def parse(replies: Sequence[Any]) -> RoutingMetrics:
            live = {node.decode() for node in replies[1]}
            availability = aggregates.parse_availability(pairs(replies[2]), live, s.tiers)
            return aggregates.routing_metrics(
                s.complexities, s.tiers, _sums(replies[0]), availability
            )

        return Staged(3, parse)

    def _stage_resources(self, plan: FanOutPlan, now_s: float) -> Staged[ResourceMetrics]:
        snapshots = read_live_snapshots(plan, self._keys, self._settings.liveness.node_ttl_s)
        connections = read_connections(plan, self._keys, self._settings.liveness.node_ttl_s)

        def parse(replies: Sequence[Any]) -> ResourceMetrics:
            live, clients = parse_staged(replies, (snapshots, connections))
            return resource_metrics(live, clients)

        return Staged(snapshots.commands + connections.commands, parse)

    def _stage_health(self, plan: FanOutPlan, now_s: float) -> Staged[HealthStatus]:
        return stage_health(plan, self._keys, self._settings.liveness.node_ttl_s)

    def _stage_fleet(self, plan: FanOutPlan, now_s: float) -> Staged[Fleet]:
        ttl_s = self._settings.liveness.node_ttl_s
        # The totals are data keys: each shard's (one on a single Redis), summed over shards.
        plan.sum_shards(lambda i: [self._shards[i].totals])
        plan.hgetall(self._keys.availability)
        histograms = [(f, t) for t in self._settings.tiers for f in ALL_TIME_FIGURES]
        for figure, tier in histograms:
            plan.hgetall_shards(partial(self._histogram_totals, figure, tier))
        snapshots = read_live_snapshots(plan, self._keys, ttl_s)
        connections = read_connections(plan, self._keys, ttl_s)
        health = self._stage_health(plan, now_s)
        fixed = 2 + len(histograms)

        def parse(replies: Sequence[Any]) -> Fleet:
            staged = (snapshots, connections, health)
            nodes, clients, status = parse_staged(replies[fixed:], staged)
            live = set(status.liveNodes)
            availability = aggregates.parse_availability(
                pairs(replies[1]), live, self._settings.tiers
            )
            bins = {
                name: AllTimeHistogram.parse(reply)
                for name, reply in zip(histograms, replies[2:fixed], strict=True)
            }
            totals = Totals.parse(replies[0])
            return Fleet(totals, bins, nodes, availability, status, clients)

        commands = fixed + snapshots.commands + connections.commands + health.commands
        return Staged(commands, parse)

    def _recent_queries(self, tier: str, shard: int) -> str:
        return self._shards[shard].recent_queries(tier)

    def _histogram_totals(self, figure: str, tier: str, shard: int) -> str:
        return self._shards[shard].histogram_totals(figure, tier)

    # --- execution ----------------------------------------------------------------------------
    async def _run_one(self, stage: Stage[T]) -> T:
        (result,) = await self._run((stage,), self._clock.now())
        return result  # type: ignore[no-any-return]

    async def _run(self, stages: Sequence[Stage[Any]], now_s: float) -> list[Any]:
        plan = FanOutPlan(self._shards)
        staged = [stage(plan, now_s) for stage in stages]
        return parse_staged(await self._read(plan), staged)

    async def _read(self, plan: FanOutPlan) -> list[Any]:
        """Run the plan, one read-script call per node; Redis errors become StoreUnavailable."""
        try:
            try:
                return await self._run_plan(plan)
            except redis.ConnectionError:
                # A restarted Redis, a failed node or moved slots: recover and try once
                # more, so the first request after recovery works.
                await self._topology.recover(self._client)
                return await self._run_plan(plan)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}") from exc

    async def _run_plan(self, plan: FanOutPlan) -> list[Any]:
        reads = self._topology.reads

        async def run(group: NodeGroup, part: ReadPlan) -> list[Any]:
            return await reads.run(self._client, group, part)

        while True:  # at most twice per newly written shard, once in the store's life
            groups = await reads.groups(self._client, self._written_shards)
            replies, newly_written = await plan.run(run, groups)
            if not newly_written:
                return replies
            self._written_shards.update(newly_written)
