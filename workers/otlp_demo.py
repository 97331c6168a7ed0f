"""Demo traffic over OTLP: the queries go out as an LLM server instrumented with the
OpenTelemetry SDK sends them (GenAI histograms, exported over OTLP/HTTP every second), so
`metrics-store up --demo otlp` shows the receiver's path end to end on the dashboard.

The SDK's own exporter posts to the API's `/v1/metrics`; the model name is the tier (the
receiver maps `gen_ai.request.model` through METRICS_OTLP_TIER_MAP, a name that is a tier
maps to itself). OTLP has no routing decision and no model availability: those still go
through the collector, so the routing panels keep their data.
"""

from __future__ import annotations

import os

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

from workers.demo_backend import Outcome

EXPORT_INTERVAL_MS = 1_000
# Scale 5 (our bins) over the demo's whole spread of values: the SDK's default of 160
# buckets would coarsen the scale and state a larger error.
MAX_BUCKETS = 1_000


class OtlpQueries:
    """Records each demo query on GenAI meters, exported to `base_url`/v1/metrics."""

    def __init__(self, base_url: str, instance: str) -> None:
        token = os.environ.get("METRICS_API_TOKEN")
        exporter = OTLPMetricExporter(
            endpoint=f"{base_url.rstrip('/')}/v1/metrics",
            headers={"Authorization": f"Bearer {token}"} if token else None,
            preferred_aggregation={
                Histogram: ExponentialBucketHistogramAggregation(max_size=MAX_BUCKETS)
            },
        )
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=EXPORT_INTERVAL_MS)
        resource = Resource.create({"service.name": "metrics-store-demo",
                                    "service.instance.id": instance})  # fmt: skip
        self._provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self._provider.get_meter("metrics-store.demo")
        self._duration = meter.create_histogram("gen_ai.server.request.duration", unit="s")
        self._ttft = meter.create_histogram("gen_ai.server.time_to_first_token", unit="s")
        self._tpot = meter.create_histogram("gen_ai.server.time_per_output_token", unit="s")
        self._tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")

    def record(self, outcome: Outcome) -> None:
        model = {"gen_ai.request.model": outcome.tier}
        latency_s = outcome.latency_ms / 1000.0
        if outcome.failed:
            self._duration.record(latency_s, {**model, "error.type": "demo_failure"})
        else:
            self._duration.record(latency_s, model)
        ttft_s = outcome.ttft_ms / 1000.0
        self._ttft.record(ttft_s, model)
        if outcome.tokens > 1:
            self._tpot.record((latency_s - ttft_s) / (outcome.tokens - 1), model)
        self._tokens.record(outcome.tokens, {**model, "gen_ai.token.type": "output"})

    def close(self) -> None:
        """Export what is left, then stop (the SDK's shutdown flushes its reader)."""
        self._provider.shutdown()
