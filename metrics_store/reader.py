"""Read the windowed aggregates from Redis: a bounded number of keys per answer, one round trip.

Each aggregate is staged as a few reads on a ReadPlan plus a parser of their replies; a plan
runs as one call of lua/read.lua, so the REST endpoints and the live update (all four at once)
share the same code and cost one command each. On Redis Cluster the data reads run on every
shard at once and are merged (metrics_store/fan_out.py): one call per shard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from metrics_store import aggregates
from metrics_store.buckets import bucket_start, chart_starts, plan_window
from metrics_store.clock import Clock, SystemClock
from metrics_store.errors import StoreUnavailable, UnknownNode
from metrics_store.fan_out import FanOutPlan
from metrics_store.health import health_status
from metrics_store.keys import QUERY_COUNT, Keys, member
from metrics_store.live_store import read_connections, read_replica_count
from metrics_store.read_plan import ReadPlan, Staged, pairs, parse_staged
from metrics_store.redis_client import discover_cluster, drop_idle_connections
from metrics_store.resources import resource_metrics
from metrics_store.scripts import READ, lua_script
from metrics_store.settings import Settings
from metrics_store.shapes import (
    HealthStatus,
    MetricsUpdate,
    QueryMetrics,
    ResourceMetrics,
    RoutingMetrics,
    TierMetrics,
    TiersResponse,
)
from metrics_store.shards import store_shards
from metrics_store.snapshots import read_live_snapshots
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
        self._shards = store_shards(settings)
        self._key_cache: dict[tuple[str, int], list[BucketKeys]] = {}
        self._count_members = [member(QUERY_COUNT, tier).encode() for tier in settings.tiers]

    # --- public: one aggregate, or all at once ---------------------------------------------
    async def queries(self) -> QueryMetrics:
        return await self._run_one(self._stage_queries)

    async def tiers(self) -> TiersResponse:
        return TiersResponse(tiers=await self._run_one(self._stage_tiers))

    async def routing(self) -> RoutingMetrics:
        return await self._run_one(self._stage_routing)

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

    async def update(self, now_s: float | None = None) -> MetricsUpdate:
        """Everything the live stream sends, read in a single round trip, as of `now_s`."""
        if now_s is None:
            now_s = self._clock.now()
        stages = (
            self._stage_queries,
            self._stage_tiers,
            self._stage_resources,
            self._stage_routing,
        )
        queries, tiers, resources, routing = await self._run(stages, now_s)
        return MetricsUpdate(
            timestamp=iso_utc(now_s),
            queries=queries,
            tiers=tiers,
            resources=resources,
            routing=routing,
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
        plan = plan_window(bucket, s.bucket_s, s.rollup_s, s.window_s)
        window = [name(s.bucket_s, start) for start in plan.fine_starts]
        window += [name(s.rollup_s, start) for start in plan.rollup_starts]
        chart = [
            name(s.bucket_s, start) for start in chart_starts(bucket, s.bucket_s, s.chart_points)
        ]
        return BucketKeys([k.encode() for k in window], [k.encode() for k in chart])

    def _sum_window(self, plan: FanOutPlan, kind: str, now_s: float) -> None:
        """Every counter summed over the window's buckets, by Redis itself (ZUNION sums)."""
        keys = self._bucket_keys(kind, bucket_start(now_s, self._settings.bucket_s))
        plan.sum_shards([shard.window for shard in keys])

    def _stage_queries(self, plan: FanOutPlan, now_s: float) -> Staged[QueryMetrics]:
        s = self._settings
        starts = chart_starts(now_s, s.bucket_s, s.chart_points)
        self._sum_window(plan, "q", now_s)
        chart = [shard.chart for shard in self._bucket_keys("q", starts[-1])]
        plan.totals_shards(chart, self._count_members)

        def parse(replies: Sequence[Any]) -> QueryMetrics:
            chart = [float(total) for total in replies[1]]
            window = _sums(replies[0])
            return aggregates.query_metrics(s.tiers, starts, chart, window, now_s, s.bucket_s)

        return Staged(2, parse)

    def _stage_tiers(self, plan: FanOutPlan, now_s: float) -> Staged[list[TierMetrics]]:
        s = self._settings
        self._sum_window(plan, "q", now_s)
        for tier in s.tiers:
            recent = [shard.recent_queries(tier) for shard in self._shards]
            plan.newest_shards(recent, s.sparkline_points)

        def parse(replies: Sequence[Any]) -> list[TierMetrics]:
            recent = dict(zip(s.tiers, replies[1:], strict=True))
            return aggregates.tier_metrics(s.tiers, _sums(replies[0]), recent)

        return Staged(1 + len(s.tiers), parse)

    def _stage_routing(self, plan: FanOutPlan, now_s: float) -> Staged[RoutingMetrics]:
        s = self._settings
        self._sum_window(plan, "r", now_s)
        plan.zrangebyscore(self._keys.live_nodes, now_s - s.node_ttl_s, "+inf")
        plan.hgetall(self._keys.availability)

        def parse(replies: Sequence[Any]) -> RoutingMetrics:
            live = {node.decode() for node in replies[1]}
            availability = aggregates.parse_availability(pairs(replies[2]), live, s.tiers)
            return aggregates.routing_metrics(
                s.complexities, s.tiers, _sums(replies[0]), availability
            )

        return Staged(3, parse)

    def _stage_resources(self, plan: FanOutPlan, now_s: float) -> Staged[ResourceMetrics]:
        alive_since = now_s - self._settings.node_ttl_s
        snapshots = read_live_snapshots(plan, self._keys, alive_since)
        connections = read_connections(plan, self._keys, alive_since)

        def parse(replies: Sequence[Any]) -> ResourceMetrics:
            live, clients = parse_staged(replies, (snapshots, connections))
            return resource_metrics(live, clients)

        return Staged(snapshots.commands + connections.commands, parse)

    def _stage_health(self, plan: FanOutPlan, now_s: float) -> Staged[HealthStatus]:
        alive_since = now_s - self._settings.node_ttl_s
        plan.zrangebyscore(self._keys.live_nodes, alive_since, "+inf")
        replicas = read_replica_count(plan, self._keys, alive_since)
        plan.hgetall(self._keys.collectors)
        plan.hgetall(self._keys.processes)
        plan.hgetall(self._keys.refused)

        def parse(replies: Sequence[Any]) -> HealthStatus:
            count = replicas.parse(replies[1:2])
            return health_status([replies[0], count, *replies[2:]], alive_since)

        return Staged(5, parse)

    # --- execution ----------------------------------------------------------------------------
    async def _run_one(self, stage: Stage[T]) -> T:
        (result,) = await self._run((stage,), self._clock.now())
        return result  # type: ignore[no-any-return]

    async def _run(self, stages: Sequence[Stage[Any]], now_s: float) -> list[Any]:
        plan = FanOutPlan(self._shards)
        staged = [stage(plan, now_s) for stage in stages]
        return parse_staged(await self._read(plan), staged)

    async def _read(self, plan: FanOutPlan) -> list[Any]:
        """Run the plan as one read-script call; Redis errors become StoreUnavailable."""
        try:
            try:
                await discover_cluster(self._client)
                return await plan.run(self._evalsha)
            except redis.ConnectionError:
                # After a Redis restart every idle pooled connection is dead: drop them all
                # and try once more on a fresh one, so the first request after recovery works.
                await drop_idle_connections(self._client)
                return await plan.run(self._evalsha)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}") from exc

    async def _evalsha(self, plan: ReadPlan) -> list[Any]:
        """The plan as one call of the read script."""
        replies = await lua_script(READ).run_async(self._client, plan.keys, plan.args)
        return list(replies)
