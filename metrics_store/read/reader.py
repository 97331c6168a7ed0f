"""Read the windowed aggregates from Redis: a bounded number of keys per answer, one round trip.

Each aggregate is staged as a few reads on a plan plus a parser of their replies (the window's
counters in `windowed.py`, latency in `latency.py`, the fleet and resources in `fleet.py`,
health in `health.py`); a plan runs as one call of read.lua per node (`runner.py`), so the
REST endpoints and the live update (all of them at once) share the same code and cost one
command each. On Redis Cluster the reads run on every primary at once, each over the shards
it serves, and are merged (`metrics_store.redis.fan_out`, `metrics_store.redis.topology`).
"""

from __future__ import annotations

from functools import partial
from typing import TypeVar

import redis.asyncio as aioredis

from metrics_store.buckets import bucket_start
from metrics_store.clock import Clock, SystemClock
from metrics_store.errors import UnknownNode
from metrics_store.read.fleet import Fleet, stage_fleet, stage_resources
from metrics_store.read.health import stage_health
from metrics_store.read.latency import LatencyPlanner
from metrics_store.read.latency_history import LatencyHistoryStages
from metrics_store.read.runner import PlanRunner, Stage
from metrics_store.read.shapes import (
    HealthStatus,
    LatencyHistory,
    LatencyMetrics,
    MetricsUpdate,
    QueryMetrics,
    ResourceMetrics,
    RoutingMetrics,
    SloMetrics,
    TiersResponse,
)
from metrics_store.read.slo import SloStages
from metrics_store.read.windowed import WindowedStages
from metrics_store.redis.fan_out import FanOutPlan
from metrics_store.redis.keys import FIGURE_LATENCY, Keys
from metrics_store.redis.read_plan import Staged
from metrics_store.redis.topology import topology_for
from metrics_store.settings import Settings
from metrics_store.slo.store import SharedObjectives, StoredObjectives
from metrics_store.timefmt import iso_utc

T = TypeVar("T")


class MetricsReader:
    """Computes the API's aggregates from Redis.

    >>> reader = MetricsReader(async_client(settings), settings)
    >>> (await reader.queries()).totalQueries
    """

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        clock: Clock | None = None,
        objectives: SharedObjectives | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._keys = Keys(settings.key_prefix)
        topology = topology_for(settings)
        self._shards = topology.shards
        self._runner = PlanRunner(client, topology)
        self._latency = LatencyPlanner(settings, self._keys, self._shards)
        self._windowed = WindowedStages(settings, self._shards, self._latency)
        self._slo = SloStages(settings, self._windowed, self._latency)
        self._history = LatencyHistoryStages(settings, self._shards, self._latency)
        self.objectives = objectives or SharedObjectives(client, settings, from_file=None)
        self._tiers_responses: dict[int | None, tuple[object, TiersResponse]] = {}

    # --- public: one aggregate, or all at once ---------------------------------------------
    # `window_s` None is the default window (settings.retention.window_s) and the 18 fine buckets of
    # queryRate; a window (windows.parse_window) tiles its buckets with the history rollups.
    async def queries(self, window_s: int | None = None) -> QueryMetrics:
        return await self._run_one(lambda plan, now: self._windowed.queries(plan, now, window_s))

    async def tiers(self, window_s: int | None = None) -> TiersResponse:
        tiers = await self._run_prepared(
            ("tiers", window_s), lambda plan, now: self._windowed.tiers(plan, now, window_s)
        )
        last = self._tiers_responses.get(window_s)
        if last is None or last[0] is not tiers:  # the same answer: the same response
            last = self._tiers_responses[window_s] = (tiers, TiersResponse(tiers=tiers))
        return last[1]

    async def routing(self, window_s: int | None = None) -> RoutingMetrics:
        return await self._run_prepared(
            ("routing", window_s), lambda plan, now: self._windowed.routing(plan, now, window_s)
        )

    async def latency(self, window_s: int | None = None) -> LatencyMetrics:
        """Latency, TTFT, queue time and time per output token per tier, over the window."""
        return await self._run_prepared(
            ("latency", window_s), lambda plan, now: self._stage_latency(plan, now, window_s)
        )

    async def latency_history(
        self, window_s: int | None = None, figure: str = FIGURE_LATENCY
    ) -> LatencyHistory:
        """p50, p95 and p99 of one figure per tier at each of the window's chart points."""
        seconds = window_s or self._settings.retention.window_s
        return await self._run_prepared(
            ("latency-history", seconds, figure),
            lambda plan, now: self._history.stage(plan, now, seconds, figure),
        )

    async def slo(self) -> SloMetrics:
        """Each objective's budget, burn rates and state (GET /api/metrics/slo)."""
        return (await self.slo_with_objectives())[0]

    async def slo_with_objectives(self) -> tuple[SloMetrics, StoredObjectives]:
        """The /slo answer and the objectives it was computed for (/metrics needs both)."""
        stored = await self.objectives.current()
        answer = await self._run_prepared(("slo", stored.version), partial(self._stage_slo, stored))
        return answer, stored

    async def resources(self, node: str | None = None) -> ResourceMetrics:
        """The cluster's resources, or (with `node`) that live node's alone."""
        metrics = await self._run_prepared(("resources",), self._stage_resources)
        if node is None:
            return metrics
        for entry in metrics.nodes:
            if entry.node == node:
                fields = entry.model_dump(exclude={"node", "sampledAt", "gpus"})
                return ResourceMetrics(**fields, nodes=[entry])
        raise UnknownNode(node)

    async def health(self) -> HealthStatus:
        """Who is alive, and what each live collector has written, dropped and holds."""
        return await self._run_prepared(("health",), self._stage_health)

    async def fleet(self) -> Fleet:
        """Everything `/metrics` exposes, in one bounded read."""
        return await self._run_prepared(("fleet",), self._stage_fleet)

    async def update(self, now_s: float | None = None) -> MetricsUpdate:
        """Everything the live stream sends, read in a single round trip, as of `now_s`."""
        if now_s is None:
            now_s = self._clock.now()
        stored = await self.objectives.current()
        stages = (
            self._windowed.queries,
            self._windowed.tiers,
            self._stage_resources,
            self._windowed.routing,
            self._stage_latency,
            partial(self._stage_slo, stored),
        )
        queries, tiers, resources, routing, latency, slo = await self._runner.run(stages, now_s)
        return MetricsUpdate(
            timestamp=iso_utc(now_s),
            queries=queries,
            tiers=tiers,
            resources=resources,
            routing=routing,
            latency=latency,
            slo=slo,
        )

    # --- the stages that are not the window counters' -------------------------------------
    def _stage_latency(
        self, plan: FanOutPlan, now_s: float, window_s: int | None = None
    ) -> Staged[LatencyMetrics]:
        return self._latency.stage(plan, now_s, window_s or self._settings.retention.window_s)

    def _stage_slo(
        self, stored: StoredObjectives, plan: FanOutPlan, now_s: float
    ) -> Staged[SloMetrics]:
        return self._slo.stage(plan, now_s, stored.objectives, stored.version)

    def _stage_resources(self, plan: FanOutPlan, now_s: float) -> Staged[ResourceMetrics]:
        return stage_resources(plan, self._keys, self._settings.liveness.node_ttl_s)

    def _stage_health(self, plan: FanOutPlan, now_s: float) -> Staged[HealthStatus]:
        return stage_health(plan, self._keys, self._settings.liveness.node_ttl_s)

    def _stage_fleet(self, plan: FanOutPlan, now_s: float) -> Staged[Fleet]:
        return stage_fleet(plan, self._settings, self._shards)

    async def _run_one(self, stage: Stage[T]) -> T:
        (result,) = await self._runner.run((stage,), self._clock.now())
        return result  # type: ignore[no-any-return]

    async def _run_prepared(self, name: tuple[object, ...], stage: Stage[T]) -> T:
        """A stage whose answer depends on the moment only through its bucket: its plan is
        prepared once per bucket, and its answer parsed again only when its replies change."""
        now_s = self._clock.now()
        bucket = bucket_start(now_s, self._settings.retention.bucket_s)
        (result,) = await self._runner.run((stage,), now_s, prepared_as=(*name, bucket))
        return result  # type: ignore[no-any-return]
