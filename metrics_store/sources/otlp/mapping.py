"""An OTLP export as placed points: each GenAI data point with its tier, figure and stream.

Mapped metrics (the GenAI semantic conventions):

    gen_ai.server.request.duration       the query latency (and the query count, errors)
    gen_ai.client.operation.duration     the same, for a resource that sends no server metric
    gen_ai.server.time_to_first_token    TTFT
    gen_ai.server.time_per_output_token  TPOT
    gen_ai.client.token.usage            tokens generated, where gen_ai.token.type = output

Other metrics are not ours to record and pass unremarked. A point of a mapped metric is
refused (OTLP partial success) when it maps to no tier, is not a histogram, has no temporality
or a unit we cannot take; a point no histogram can have (NaN, counts that do not add up)
makes the whole export malformed (BadPoint).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    ResourceMetrics,
)

from metrics_store.settings import Settings
from metrics_store.sources.otlp.convert import Bins, from_explicit, from_exponential, totals_only

LATENCY = "latency"
TTFT = "ttft"
TPOT = "tpot"
TOKENS = "tokens"
# Roles only the engine scraper's points take (sources/engines/): OTLP's GenAI conventions have
# no queue time, and mark errors on the latency points (error.type) instead.
QUEUE = "queue"
ERRORS = "errors"  # errored queries among those a latency point already counts
FAILURES = "failures"  # failed queries no latency point counts: queries and errors both
SERVER_DURATION = "gen_ai.server.request.duration"
CLIENT_DURATION = "gen_ai.client.operation.duration"
ROLES = {
    SERVER_DURATION: LATENCY,
    CLIENT_DURATION: LATENCY,
    "gen_ai.server.time_to_first_token": TTFT,
    "gen_ai.server.time_per_output_token": TPOT,
    "gen_ai.client.token.usage": TOKENS,
}
NODE_ATTRIBUTES = ("service.instance.id", "host.name")
DEFAULT_NODE = "otlp"
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


@dataclass(frozen=True)
class Placed:
    """One data point, converted and placed: which stream, tier and figure it feeds."""

    stream: str  # hash of (resource, scope, metric, attributes): the cumulative stream
    node: str
    tier: str
    role: str
    error: bool  # error.type set: the point's queries failed
    cumulative: bool
    start_ns: int
    time_ns: int
    bins: Bins


@dataclass
class Mapped:
    """An export's points, and those refused with the reasons (OTLP partial success)."""

    points: list[Placed] = field(default_factory=list)
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)  # "<metric> <value>" -> points

    def reject(self, count: int, reason: str) -> None:
        self.rejected += count
        self.reasons[reason] += count

    def message(self) -> str:
        return "; ".join(f"{count} {reason}" for reason, count in sorted(self.reasons.items()))


def text(value: AnyValue) -> str:
    """An attribute's value as text (string, int, double or bool; else its JSON-ish form)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    found = getattr(value, kind)
    return (
        found
        if isinstance(found, str)
        else str(found).lower()
        if kind == "bool_value"
        else str(found)
    )


def attributes(pairs: Iterable[KeyValue]) -> dict[str, str]:
    return {pair.key: text(pair.value) for pair in pairs}


def _stream_id(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


class ExportMapper:
    """Maps exports by the settings' tier attribute and tier map."""

    def __init__(self, settings: Settings) -> None:
        self._tiers = set(settings.tiers)
        self._map = settings.otlp.tier_map
        self._attribute = settings.otlp.tier_attribute

    def tier_of(self, value: str | None) -> str | None:
        if value is None:
            return None
        tier = self._map.get(value, value)
        return tier if tier in self._tiers else None

    def map(self, request: ExportMetricsServiceRequest) -> Mapped:
        out = Mapped()
        for resource_metrics in request.resource_metrics:
            self._resource(resource_metrics, out)
        return out

    def _resource(self, resource_metrics: ResourceMetrics, out: Mapped) -> None:
        resource = attributes(resource_metrics.resource.attributes)
        node = next((resource[a] for a in NODE_ATTRIBUTES if resource.get(a)), DEFAULT_NODE)
        # The client's view of latency counts only where the server sends none.
        names = {m.name for s in resource_metrics.scope_metrics for m in s.metrics}
        for scope_metrics in resource_metrics.scope_metrics:
            scope = (scope_metrics.scope.name, scope_metrics.scope.version)
            for metric in scope_metrics.metrics:
                if metric.name not in ROLES:
                    continue
                if metric.name == CLIENT_DURATION and SERVER_DURATION in names:
                    continue
                context = (sorted(resource.items()), scope, metric.name)
                self._metric(metric, resource, node, context, out)

    def _metric(
        self,
        metric: Metric,
        resource: Mapping[str, str],
        node: str,
        context: tuple[object, ...],
        out: Mapped,
    ) -> None:
        kind = metric.WhichOneof("data")
        if kind not in ("histogram", "exponential_histogram"):
            count = len(getattr(metric, kind).data_points) if kind else 0
            out.reject(count, f"points of {metric.name} refused: a histogram is expected")
            return
        data = metric.histogram if kind == "histogram" else metric.exponential_histogram
        if data.aggregation_temporality not in (CUMULATIVE, DELTA):
            out.reject(len(data.data_points), f"points of {metric.name} have no temporality")
            return
        role, temporality = ROLES[metric.name], data.aggregation_temporality
        for point in data.data_points:
            labels = attributes(point.attributes)
            if role == TOKENS and labels.get("gen_ai.token.type") != "output":
                continue  # input tokens: not a figure of ours
            value = labels.get(self._attribute, resource.get(self._attribute))
            tier = self.tier_of(value)
            if tier is None:
                out.unmapped[f"{metric.name} {value or '-'}"] += 1
                out.reject(1, f"points of {metric.name} map to no tier ({self._attribute})")
                continue
            try:
                bins = _bins(point, role, metric.unit)
            except ValueError as exc:
                if type(exc) is not ValueError:
                    raise  # BadPoint: the export is malformed
                out.reject(1, f"points of {metric.name} refused: {exc}")
                continue
            stream = _stream_id(*context, sorted(labels.items()))
            error, cumulative = bool(labels.get("error.type")), temporality == CUMULATIVE
            start, end = point.start_time_unix_nano, point.time_unix_nano
            out.points.append(Placed(stream, node, tier, role, error, cumulative, start, end, bins))


def _bins(point: HistogramDataPoint | ExponentialHistogramDataPoint, role: str, unit: str) -> Bins:
    """The point in our bins (token usage: its count and sum alone)."""
    if role == TOKENS:
        return totals_only(point)
    if isinstance(point, HistogramDataPoint):
        return from_explicit(point, unit)
    return from_exponential(point, unit)
