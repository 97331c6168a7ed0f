"""The OpenTelemetry SDK as an LLM server uses it: GenAI histograms, exported over OTLP/HTTP.

An in-memory reader collects; the test exports what it collected with the SDK's own OTLP/HTTP
exporter, when it chooses (and as often: the same data twice is an exporter's retry).
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import Aggregation, ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

# The SDK's default (160 buckets) keeps scale 5 over 5 doublings only; 1000 over 31 (TPOT
# spans many more than latency).
WIDE_BUCKETS = 1000


class GenAiServer:
    """One server process's meters: request duration, TTFT, TPOT and token usage."""

    def __init__(
        self,
        instance: str,
        *,
        delta: bool = False,
        exponential: bool = True,
        max_size: int = WIDE_BUCKETS,
    ) -> None:
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        aggregation: dict[type, Aggregation] = {}
        if exponential:
            aggregation[Histogram] = ExponentialBucketHistogramAggregation(max_size=max_size)
        self.reader = InMemoryMetricReader(
            preferred_temporality={Histogram: temporality}, preferred_aggregation=aggregation
        )
        resource = Resource.create({"service.name": "vllm", "service.instance.id": instance})
        self.provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        meter = self.provider.get_meter("vllm.genai")
        self.duration = meter.create_histogram("gen_ai.server.request.duration", unit="s")
        self.ttft = meter.create_histogram("gen_ai.server.time_to_first_token", unit="s")
        self.tpot = meter.create_histogram("gen_ai.server.time_per_output_token", unit="s")
        self.tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")

    def serve(
        self, model: str, latency_s: float, ttft_s: float, tokens: int, error: bool = False
    ) -> None:
        labels: dict[str, str] = {"gen_ai.request.model": model}
        if error:
            labels["error.type"] = "timeout"
        self.duration.record(latency_s, labels)
        self.ttft.record(ttft_s, {"gen_ai.request.model": model})
        if tokens > 1:
            tpot = (latency_s - ttft_s) / (tokens - 1)
            self.tpot.record(tpot, {"gen_ai.request.model": model})
        output = {"gen_ai.request.model": model, "gen_ai.token.type": "output"}
        self.tokens.record(tokens, output)
        self.tokens.record(7, {"gen_ai.request.model": model, "gen_ai.token.type": "input"})

    def collect(self) -> MetricsData:
        data = self.reader.get_metrics_data()
        assert data is not None
        return data

    def shutdown(self) -> None:
        self.provider.shutdown()


def exporter(base_url: str, token: str | None = None) -> OTLPMetricExporter:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return OTLPMetricExporter(endpoint=f"{base_url}/v1/metrics", headers=headers, timeout=10)


def export(base_url: str, data: MetricsData, token: str | None = None) -> None:
    sent = exporter(base_url, token)
    try:
        assert sent.export(data) == MetricExportResult.SUCCESS
    finally:
        sent.shutdown()


def request_of(data: MetricsData) -> ExportMetricsServiceRequest:
    """The export the SDK's exporter sends for `data`."""
    encoded: ExportMetricsServiceRequest = encode_metrics(data)
    return encoded
