"""OTLP ingest against the collector's, same run: events (queries) a second, data points a
second, and the receiver's CPU per data point (docs/otel.md, docs/performance.md).

Exports are made by the real OpenTelemetry SDK (cumulative exponential histograms, the GenAI
metrics) for `INSTANCES` server instances x 3 models, `ROUNDS` exports each, `PER_ROUND`
queries per instance between two exports; they are encoded ahead, then taken by the receiver
in this process (decode, map, deltas, write), so the figures are the receiver's and Redis's.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

from bench.common import Table, private_redis, progress, write_results
from bench.ingest import collector_rate
from metrics_store.settings import Settings
from metrics_store.sources.otlp.decode import PROTOBUF, decode
from metrics_store.sources.otlp.receiver import OtlpReceiver

MODELS = {"llama-8b": "Q2", "llama-70b": "Q3", "llama-405b": "Q4"}


def _exports(instances: int, rounds: int, per_round: int) -> tuple[list[bytes], int]:
    """The SDK's export bodies, in the order sent, and the queries they carry."""
    rng = random.Random(1)
    servers = []
    for i in range(instances):
        reader = InMemoryMetricReader(
            preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation(max_size=1000)}
        )
        resource = Resource.create({"service.instance.id": f"vllm-{i}"})
        meter = MeterProvider(resource=resource, metric_readers=[reader]).get_meter("vllm")
        names = ("request.duration", "time_to_first_token", "time_per_output_token")
        histograms = [meter.create_histogram(f"gen_ai.server.{n}", unit="s") for n in names]
        tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
        servers.append((reader, histograms, tokens))
    bodies = []
    for _ in range(rounds):
        for reader, (duration, ttft, tpot), tokens in servers:
            for q in range(per_round):
                model = list(MODELS)[q % 3]
                latency = rng.lognormvariate(-0.5, 0.8)
                labels = {"gen_ai.request.model": model}
                duration.record(latency, labels)
                ttft.record(latency * 0.2, labels)
                tpot.record(latency * 0.8 / 99, labels)
                tokens.record(100, {**labels, "gen_ai.token.type": "output"})
            data = reader.get_metrics_data()
            assert data is not None
            bodies.append(encode_metrics(data).SerializeToString())
    return bodies, instances * rounds * per_round


def otlp_rates(url: str, instances: int, rounds: int, per_round: int) -> dict[str, float]:
    bodies, queries = _exports(instances, rounds, per_round)
    settings = Settings(
        redis_url=url,
        key_prefix=f"otlp{uuid.uuid4().hex[:8]}",
        otlp_tier_map=",".join(f"{m}={t}" for m, t in MODELS.items()),
    )
    receiver = OtlpReceiver(settings)
    points = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for body in bodies:
        export, _ = decode(body, PROTOBUF, None, settings.otlp.max_body_bytes)
        points += sum(
            len(m.exponential_histogram.data_points)
            for r in export.resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
        )
        result = receiver.export(export)
        assert result.rejected == 0, result.message
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    receiver.close()
    return {
        "queries_per_s": queries / wall,
        "points_per_s": points / wall,
        "cpu_us_per_point": cpu / points * 1e6,
        "points": points,
        "queries": queries,
    }


def run(full: bool) -> dict[str, Any]:
    instances, rounds = (50, 20) if full else (20, 10)
    events = 1_000_000 if full else 100_000
    table = Table(
        "OTLP ingest vs the collector (same run, same Redis)",
        ["queries/export", "OTLP queries/s", "points/s", "x collector", "CPU/point"],
    )
    payload: dict[str, Any] = {}
    with private_redis() as server:
        progress(f"collector: {events} events")
        collector = payload["collector_events_per_s"] = collector_rate(server.url, events)
        # Queries per instance between two exports: a busy server exporting every 10 s sends
        # hundreds; the receiver's work per export hardly grows with them.
        for per_round in (150, 1500):
            progress(f"OTLP: {instances} instances x {rounds} exports, {per_round} queries each")
            otlp = payload[f"otlp_{per_round}"] = otlp_rates(
                server.url, instances, rounds, per_round
            )
            table.add(
                per_round,
                f"{otlp['queries_per_s']:,.0f}",
                f"{otlp['points_per_s']:,.0f}",
                f"{otlp['queries_per_s'] / collector:.2f}",
                f"{otlp['cpu_us_per_point']:.0f} us",
            )
    print(f"\n  collector: {collector:,.0f} events/s")
    print(table.render())
    write_results("otlp", payload)
    return payload
