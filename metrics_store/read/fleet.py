"""The whole fleet at one moment, for `/metrics`: all-time totals, live nodes, availability.

Read in one bounded call (`MetricsReader.fleet()`): the totals are one sorted set whatever the
event volume, and the rest is O(nodes + replicas + collectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from metrics_store.live.live_store import read_connections
from metrics_store.live.snapshots import NodeSnapshot, read_live_snapshots
from metrics_store.read import aggregates
from metrics_store.read.health import stage_health
from metrics_store.read.resources import resource_metrics
from metrics_store.read.shapes import HealthStatus, ModelAvailability, ResourceMetrics
from metrics_store.redis.fan_out import FanOutPlan
from metrics_store.redis.keys import (
    FIGURES,
    HISTOGRAM_ERROR,
    HISTOGRAM_SUM,
    TOTAL_GOOD,
    TOTAL_JUDGED,
    TOTAL_LATENCY_MS,
    TOTAL_QUERIES,
    TOTAL_ROUTING,
    TOTAL_TOKENS,
    Keys,
)
from metrics_store.redis.read_plan import Staged, pairs, parse_staged
from metrics_store.settings import Settings


@dataclass(frozen=True)
class Totals:
    """All-time counters, from `{p}:totals` (member "<counter>:<labels>" -> value)."""

    values: dict[str, float]

    @classmethod
    def parse(cls, flat: Sequence[bytes]) -> Totals:
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return cls({member.decode(): float(score) for member, score in pairs})

    def queries(self, tier: str, error: bool) -> float:
        return self.values.get(f"{TOTAL_QUERIES}:{tier}:{int(error)}", 0.0)

    def tokens(self, tier: str) -> float:
        return self.values.get(f"{TOTAL_TOKENS}:{tier}", 0.0)

    def latency_ms(self, tier: str) -> float:
        return self.values.get(f"{TOTAL_LATENCY_MS}:{tier}", 0.0)

    def good(self, tier: str) -> float:
        """Queries that met every objective of their tier (judged as written: judge.py)."""
        return self.values.get(f"{TOTAL_GOOD}:{tier}", 0.0)

    def judged(self, tier: str) -> float:
        """Queries judged against their tier's objectives (the good ones' total)."""
        return self.values.get(f"{TOTAL_JUDGED}:{tier}", 0.0)

    def routing(self, complexity: str, tier: str, fallback: bool) -> float:
        return self.values.get(f"{TOTAL_ROUTING}:{complexity}:{tier}:{int(fallback)}", 0.0)


@dataclass(frozen=True)
class AllTimeHistogram:
    """One figure's all-time bins for one tier (metrics_store/histogram.py), and its sum."""

    bins: dict[int, int]
    sum_ms: float

    @classmethod
    def parse(cls, flat: Sequence[bytes]) -> AllTimeHistogram:
        bins: dict[int, int] = {}
        sum_ms = 0.0
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            if field.decode() == HISTOGRAM_SUM:
                sum_ms = float(value)
            elif not field.decode().startswith(HISTOGRAM_ERROR):
                bins[int(field)] = int(value)
        return cls(bins, sum_ms)


@dataclass(frozen=True)
class Fleet:
    totals: Totals
    histograms: dict[tuple[str, str], AllTimeHistogram]  # (figure, tier) ->
    nodes: list[NodeSnapshot]  # the live nodes' latest snapshots
    availability: list[ModelAvailability]
    health: HealthStatus
    connections: int  # WebSocket clients of the live replicas


def stage_resources(plan: FanOutPlan, keys: Keys, ttl_s: float) -> Staged[ResourceMetrics]:
    """`/resources`: the live nodes' snapshots and the live replicas' clients, summed."""
    snapshots = read_live_snapshots(plan, keys, ttl_s)
    connections = read_connections(plan, keys, ttl_s)

    def parse(replies: Sequence[Any]) -> ResourceMetrics:
        live, clients = parse_staged(replies, (snapshots, connections))
        return resource_metrics(live, clients)

    return Staged(snapshots.commands + connections.commands, parse)


def stage_fleet(plan: FanOutPlan, settings: Settings, shards: Sequence[Keys]) -> Staged[Fleet]:
    """Everything `/metrics` exposes: all-time totals and histograms (summed over the shards),
    availability, live nodes, clients and health."""
    keys = Keys(settings.key_prefix)
    ttl_s = settings.liveness.node_ttl_s
    # The totals are data keys: each shard's (one on a single Redis), summed over shards.
    plan.sum_shards(lambda i: [shards[i].totals])
    plan.hgetall(keys.availability)
    # Every figure: besides the Prometheus histograms', those a latency objective keeps.
    histograms = [(f, t) for t in settings.tiers for f in FIGURES]
    for figure, tier in histograms:
        plan.hgetall_shards(partial(_histogram_totals, shards, figure, tier))
    snapshots = read_live_snapshots(plan, keys, ttl_s)
    connections = read_connections(plan, keys, ttl_s)
    health = stage_health(plan, keys, ttl_s)
    fixed = 2 + len(histograms)

    def parse(replies: Sequence[Any]) -> Fleet:
        nodes, clients, status = parse_staged(replies[fixed:], (snapshots, connections, health))
        live = set(status.liveNodes)
        availability = aggregates.parse_availability(pairs(replies[1]), live, settings.tiers)
        bins = {
            name: AllTimeHistogram.parse(reply)
            for name, reply in zip(histograms, replies[2:fixed], strict=True)
        }
        return Fleet(Totals.parse(replies[0]), bins, nodes, availability, status, clients)

    commands = fixed + snapshots.commands + connections.commands + health.commands
    return Staged(commands, parse)


def _histogram_totals(shards: Sequence[Keys], figure: str, tier: str, shard: int) -> str:
    return shards[shard].histogram_totals(figure, tier)
