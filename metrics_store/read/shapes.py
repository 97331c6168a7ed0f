"""The JSON shapes of the API (the guide's, plus `nodes` and `gpus`), with every field documented.

Readers build these; the API uses them as response models; the live stream sends them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from metrics_store.histogram import RELATIVE_ERROR


class Shape(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- /api/metrics/queries ------------------------------------------------------------------
class QueryMetrics(Shape):
    timestamps: list[str] = Field(
        description="Starts of the last chart buckets (ISO-8601 UTC), oldest first; "
        "the last holds now."
    )
    queryRate: list[float] = Field(
        description="Queries per second in each bucket; the current bucket divides by the "
        "seconds elapsed in it (at least 1)."
    )
    totalQueries: int = Field(description="Queries in the rolling window, errors included.")
    avgLatencyMs: float = Field(description="Mean latency_ms over the window; 0 with no query.")
    tierDistribution: dict[str, int] = Field(
        description="Queries per configured tier over the window, 0 where none."
    )


# --- /api/metrics/tiers --------------------------------------------------------------------
class TierMetrics(Shape):
    name: str = Field(description="Tier name.")
    tokensPerSec: list[float] = Field(
        description="tokens_generated / generation seconds of the tier's last queries, oldest "
        "first (0 where generation_time_ms was 0)."
    )
    latencyMs: list[float] = Field(description="latency_ms of the tier's last queries.")
    requestCount: int = Field(description="Queries of this tier in the window.")
    errorRate: float = Field(description="Errored / all queries of this tier in the window.")
    p50LatencyMs: float = Field(
        default=0.0, description="Median latency_ms over the window (0 with no query)."
    )
    p95LatencyMs: float = Field(default=0.0, description="95th percentile latency_ms.")
    p99LatencyMs: float = Field(default=0.0, description="99th percentile latency_ms.")
    requestsPerSec: float = Field(
        default=0.0, description="requestCount over the window's seconds: the raw throughput."
    )
    goodCount: int | None = Field(
        default=None,
        description="Queries of the window that met every objective of their tier (docs/slo.md)"
        ", judged as they were written; null where no objective covers the tier.",
    )
    goodputPerSec: float | None = Field(
        default=None, description="goodCount over the window's seconds; null as goodCount."
    )


class TiersResponse(Shape):
    tiers: list[TierMetrics] = Field(description="One entry per configured tier, in order.")


# --- /api/metrics/resources ----------------------------------------------------------------
class UsageGiB(Shape):
    used: float = Field(description="GiB in use.")
    total: float = Field(description="GiB in all.")
    percent: float = Field(description="used / total * 100 (0 when total is 0).")


class CpuUsage(Shape):
    percent: float = Field(description="CPU busy percent (0-100), averaged by cores.")
    cores: int = Field(description="Logical cores.")


class ThreadPoolStatus(Shape):
    active: int = Field(description="Jobs being run by workers now.")
    queued: int = Field(description="Jobs waiting in the queues.")


class DiskIO(Shape):
    readMBps: float = Field(description="Disk reads, MB/s (10^6 bytes), between samples.")
    writeMBps: float = Field(description="Disk writes, MB/s, between samples.")


class NetworkThroughput(Shape):
    rxMBps: float = Field(description="Bytes received, MB/s, between samples.")
    txMBps: float = Field(description="Bytes sent, MB/s, between samples.")


class GpuStatus(Shape):
    index: int = Field(description="NVML device index.")
    name: str = Field(description="Device name.")
    memoryUsed: float = Field(description="GiB of device memory in use.")
    memoryTotal: float = Field(description="GiB of device memory.")
    utilization: float | None = Field(default=None, description="GPU busy percent, if known.")
    temperatureC: float | None = Field(default=None, description="Degrees Celsius, if known.")
    powerW: float | None = Field(default=None, description="Power draw in watts, if known.")


class ResourceFields(Shape):
    vram: UsageGiB = Field(description="GPU memory over all GPUs (zeros without NVML or GPU).")
    cpu: CpuUsage
    memory: UsageGiB = Field(description="System memory.")
    faissIndexSize: int = Field(description="Bytes of the FAISS index file(s).")
    redisCacheSize: int = Field(description="Redis used_memory in bytes (cluster-wide).")
    activeConnections: int = Field(description="Live WebSocket clients over all replicas.")
    threadPoolStatus: ThreadPoolStatus = Field(description="The job queue (cluster-wide).")
    diskIO: DiskIO
    networkThroughput: NetworkThroughput


class NodeResources(ResourceFields):
    node: str = Field(description="Node name (METRICS_NODE).")
    sampledAt: str = Field(description="When the node's sampler took this snapshot.")
    gpus: list[GpuStatus] = Field(default=[], description="Each GPU of the node.")


class ResourceMetrics(ResourceFields):
    nodes: list[NodeResources] = Field(
        description="Each live node, by name; the top-level fields sum them."
    )


# --- /api/metrics/routing ------------------------------------------------------------------
class MatrixCell(Shape):
    complexity: str
    tier: str
    count: int = Field(description="Decisions of this complexity routed to this tier.")
    avgScore: float = Field(description="Mean complexity score of those decisions (0 if none).")


class AccuracyMetrics(Shape):
    totalDecisions: int = Field(description="Routing decisions in the window.")
    avgDecisionTimeMs: float = Field(description="Mean decision_time_ms over the window.")
    fallbackRate: float = Field(description="Fallback decisions / all decisions.")


class ModelAvailability(Shape):
    tier: str
    available: int = Field(description="Healthy models, summed over live nodes.")
    total: int = Field(description="Models, summed over live nodes.")


class RoutingMetrics(Shape):
    decisionMatrix: list[MatrixCell] = Field(
        description="All complexity x tier cells, complexities in order, tiers in order."
    )
    accuracyMetrics: AccuracyMetrics
    modelAvailability: list[ModelAvailability] = Field(description="Every configured tier.")


# --- /api/metrics/latency -------------------------------------------------------------------
class Distribution(Shape):
    count: int = Field(description="Values in the window.")
    mean: float = Field(description="Their exact mean, ms (0 with no value).")
    p50: float = Field(description="Median, ms, within relativeError of the exact value.")
    p90: float = Field(description="90th percentile, ms.")
    p95: float = Field(description="95th percentile, ms.")
    p99: float = Field(description="99th percentile, ms.")
    p999: float = Field(description="99.9th percentile, ms.")


class TierLatency(Shape):
    name: str = Field(description="Tier name.")
    relativeError: float = Field(
        default=RELATIVE_ERROR,
        description="The bound of this tier's quantiles: relativeError, or more where some "
        "of its values came from coarser OTLP histograms (docs/otel.md).",
    )
    latencyMs: Distribution = Field(description="latency_ms of the window's queries.")
    ttftMs: Distribution | None = Field(
        description="Time to first token; null where no query of the window carried it."
    )
    queueTimeMs: Distribution | None = Field(
        description="Waiting before inference began; null where no query carried it."
    )
    tpotMs: Distribution | None = Field(
        description="Time per output token after the first: (latency_ms - ttft_ms) / "
        "(tokens_generated - 1), for queries with ttft_ms and 2 tokens or more; else null."
    )


class LatencyWindow(Shape):
    seconds: int = Field(description="Length of the window answered, in seconds.")
    start: str = Field(description="Its start (ISO-8601 UTC).")
    end: str = Field(description="Its end, the end of the current 10-second bucket.")


class LatencyMetrics(Shape):
    window: LatencyWindow
    relativeError: float = Field(
        description="Every quantile lies within this relative distance of the exact order "
        "statistics of ranks floor(p (n-1)) and ceil(p (n-1)) (docs/latency.md)."
    )
    tiers: list[TierLatency] = Field(description="One entry per configured tier, in order.")


class TierLatencyHistory(Shape):
    name: str = Field(description="Tier name.")
    relativeError: float = Field(
        description="The bound of this tier's quantiles (larger where coarse histograms fed it)."
    )
    count: list[int] = Field(description="Values of the figure in each point, oldest first.")
    p50: list[float | None] = Field(
        description="Each point's median, ms; null where the point holds no value."
    )
    p95: list[float | None] = Field(description="Each point's 95th percentile, ms, or null.")
    p99: list[float | None] = Field(description="Each point's 99th percentile, ms, or null.")


class LatencyHistory(Shape):
    window: LatencyWindow
    figure: str = Field(description="latency, ttft, queue or tpot (docs/latency.md).")
    pointSeconds: int = Field(description="Length of each point (window / 18, rounded up).")
    timestamps: list[str] = Field(
        description="Each point's start (ISO-8601 UTC), oldest first; the last holds now."
    )
    relativeError: float = Field(description="The worst tier's bound (docs/latency.md).")
    tiers: list[TierLatencyHistory] = Field(
        description="One entry per configured tier, in order: the percentiles of each point's "
        "own values, from the histogram buckets that tile it."
    )


# --- /api/metrics/slo -----------------------------------------------------------------------
class BurnAlert(Shape):
    windows: str = Field(description='The pair\'s long and short windows, as "1h/5m".')
    factor: float = Field(description="The burn rate both windows must exceed to fire.")
    severity: str = Field(description="page or ticket: what a firing pair asks for.")
    longRate: float | None = Field(description="Burn rate over the long window (null: no query).")
    shortRate: float | None = Field(description="Burn rate over the short window.")
    firing: bool = Field(description="Both rates at least the factor.")


class ObjectiveStatus(Shape):
    name: str = Field(description="The objective's name.")
    tier: str = Field(description='Its tier, or "*" (every tier).')
    kind: str = Field(description="latency, errors or combined (docs/slo.md).")
    figure: str | None = Field(
        default=None, description="latency objectives: latency, ttft, queue or tpot."
    )
    thresholdMs: float | None = Field(default=None, description="The threshold as defined.")
    effectiveThresholdMs: float | None = Field(
        default=None,
        description="The histogram bin edge nearest the threshold: the counts are exact for it.",
    )
    target: float = Field(description="The share of good queries promised, e.g. 0.99.")
    windowSeconds: int = Field(description="The compliance window.")
    windowStart: str = Field(
        description="Where the counted compliance window starts (ISO-8601 UTC): later than "
        "now - windowSeconds by less than an hour, at the edge of the hour roll-ups kept."
    )
    good: int = Field(description="Good queries in the compliance window.")
    total: int = Field(description="Queries the objective counts in the compliance window.")
    compliance: float | None = Field(description="good / total; null with no query.")
    errorBudgetRemaining: float = Field(
        description="1 - bad / (total x (1 - target)): 1 untouched, 0 spent, below 0 overspent."
    )
    exhaustedInSeconds: float | None = Field(
        description="When the budget runs out if the last hour's burn rate goes on; 0 spent "
        "already; null when it is not burning."
    )
    burnRates: dict[str, float | None] = Field(
        description='Burn rate per window ("5m" to "3d"): the window\'s bad share over the '
        "budget share 1 - target (1 spends the budget exactly over the compliance window); "
        "null with no query in the window."
    )
    alerts: list[BurnAlert] = Field(description="The multi-window pairs, fastest first.")
    state: str = Field(
        description="page when 1h and 5m both burn at least 14.4, or 6h and 30m at least 6; "
        "else ticket when 1d and 2h burn at least 3, or 3d and 6h at least 1; else ok."
    )


class SloMetrics(Shape):
    timestamp: str = Field(description="When the answer was computed (ISO-8601 UTC).")
    definitionsVersion: int = Field(
        description="Version of the stored definitions (0: none stored yet)."
    )
    objectives: list[ObjectiveStatus] = Field(description="One entry per objective, in order.")


# --- the live stream -----------------------------------------------------------------------
class MetricsUpdate(Shape):
    type: str = Field(default="metrics_update")
    timestamp: str = Field(description="When the update was computed (ISO-8601 UTC).")
    queries: QueryMetrics
    tiers: list[TierMetrics]
    resources: ResourceMetrics
    routing: RoutingMetrics
    latency: LatencyMetrics | None = Field(
        default=None, description="The /latency answer for the default window."
    )
    slo: SloMetrics | None = Field(
        default=None, description="The /slo answer: every objective's budget and state."
    )


# --- /api/metrics/health --------------------------------------------------------------------
class CollectorHealth(Shape):
    node: str = Field(description="The collector's node (METRICS_NODE).")
    pid: int = Field(description="The collector's process id.")
    writtenEvents: int = Field(description="Events this collector has written to Redis.")
    droppedEvents: int = Field(
        description="Events it dropped, for every reason (droppedByReason has them apart)."
    )
    droppedByReason: dict[str, int] = Field(
        default_factory=dict,
        description="Dropped events by why: buffer_full (its buffer filled during an outage), "
        "dead_letter (Redis refused the batch for its content: kept in the dead-letter stream), "
        "unconfirmed (the batch's fate was unknown past its id marker's life), partial "
        "(Redis refused it partway through, part of it stored).",
    )
    pendingEvents: int = Field(description="Events recorded but not yet written.")
    refusedEvents: int = Field(
        default=0, description="Events refused: stamped too far from Redis's clock."
    )
    lastSeen: str = Field(description="When it last reported (ISO-8601 UTC).")


class LoopHealth(Shape):
    name: str = Field(description="The loop (collector-flusher, live-ticker, sampler, ...).")
    errors: int = Field(description="Failed passes since the process started.")
    failing: bool = Field(description="Whether its latest pass failed.")
    lastError: str | None = Field(description="The latest failure, type and message.")
    lastErrorAt: str | None = Field(description="When it happened (ISO-8601 UTC).")


class ProcessHealth(Shape):
    process: str = Field(description="node:pid:instance of the process.")
    node: str = Field(description="Its node (METRICS_NODE).")
    roles: list[str] = Field(description="What it runs: collector, api, sampler.")
    lastSeen: str = Field(description="When it last reported (ISO-8601 UTC).")
    loops: list[LoopHealth] = Field(description="Each of its long-running loops.")


class HealthStatus(Shape):
    liveNodes: list[str] = Field(description="Nodes with a heartbeat within the node TTL.")
    liveReplicas: int = Field(description="API replicas with a heartbeat within the node TTL.")
    collectors: list[CollectorHealth] = Field(description="Each live collector's counters.")
    droppedEvents: int = Field(description="Events dropped by the live collectors, in all.")
    processes: list[ProcessHealth] = Field(
        default_factory=list, description="Each live process's loops and their failures."
    )
    loopErrors: int = Field(default=0, description="Failed loop passes of the live processes.")
    refusedEvents: dict[str, int] = Field(
        default_factory=dict,
        description="Per node, events ever refused for a clock too far from Redis's.",
    )
    otlpUnmapped: dict[str, int] = Field(
        default_factory=dict,
        description="OTLP data points refused as mapping to no tier, per "
        '"<metric> <tier attribute value>" (docs/otel.md).',
    )
    sloWebhookSent: int = Field(
        default=0, description="Objective state changes the webhook receiver took (docs/slo.md)."
    )
    sloWebhookFailures: int = Field(
        default=0,
        description="Webhook POSTs that failed (an error status, no answer in time); each is "
        "tried again with backoff.",
    )
    engineScrapesFailed: dict[str, int] = Field(
        default_factory=dict,
        description="Per engine URL, scrapes of `metrics-store scrape` that failed: "
        "unreachable, an HTTP error, or text the Prometheus parsers refuse (docs/engines.md).",
    )
    engineUnmapped: dict[str, int] = Field(
        default_factory=dict,
        description='Scraped points that mapped to no tier, per "<url> <family> <tier label '
        'value>" (docs/engines.md).',
    )
