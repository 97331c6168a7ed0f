"""An OTLP export recorded: mapped, made deltas, written as aggregate batches.

OTLP points are aggregates, not events, so they are written as the ingest script's counters
and histograms (record/batch.py `encode_sums`): per tier and fine bucket the query count,
errors, latency sum, tokens, and each figure's bins; no stream entry, no recent-list push.
Each cumulative step is one batch whose id names the step (temporality.py), so a retried
export, on any replica, finds the ingest script's marker and adds nothing. Delta points
have no state to tell a retry by: their batch's id is a hash of their content, the same
for the same export sent again.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from metrics_store.record.batch import BatchEncoder, EncodedBatch, HistogramSums, QuerySums
from metrics_store.redis.keys import (
    FIGURE_LATENCY,
    FIGURE_QUEUE,
    FIGURE_TPOT,
    FIGURE_TTFT,
    HISTOGRAM_ERROR,
    Keys,
)
from metrics_store.redis.replica_ack import acks_wanted, write_batch
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.redis.topology import Topology, topology_for
from metrics_store.settings import Settings
from metrics_store.sources.otlp.mapping import (
    ERRORS,
    FAILURES,
    LATENCY,
    QUEUE,
    TOKENS,
    TPOT,
    TTFT,
    ExportMapper,
    Mapped,
    Placed,
)
from metrics_store.sources.otlp.temporality import CumulativeStreams, Delta

FIGURES = {LATENCY: FIGURE_LATENCY, TTFT: FIGURE_TTFT, TPOT: FIGURE_TPOT, QUEUE: FIGURE_QUEUE}
# A point stamped this far ahead of our clock is still taken (exporters' clocks drift).
MIN_FUTURE_S = 60.0


@dataclass(frozen=True)
class ExportResult:
    """OTLP's partial success: points refused, and why (empty when all were taken)."""

    rejected: int
    message: str


class OtlpReceiver:
    """Records OTLP exports into the store; one per process, thread-safe as its client."""

    def __init__(
        self,
        settings: Settings,
        topology: Topology | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._topology = topology or topology_for(settings)
        self._client = self._topology.sync_client()
        keys = Keys(settings.key_prefix)
        control = keys if self._topology.control_apart else None
        self._encoders = [BatchEncoder(settings, s, control) for s in self._topology.shards]
        self._mapper = ExportMapper(settings)
        # A stream's state outlives any pause of its exporter that the store's history spans:
        # lost, the stream's next point would count all it holds since its start again.
        state_ttl_s = max(settings.retention.history_s, settings.recording.batch_id_ttl_s)
        self._streams = CumulativeStreams(self._client, keys, state_ttl_s)
        self._unmapped_key = keys.otlp_unmapped
        self._ingest = lua_script(INGEST)
        self._pipelined = self._topology.pipelined_sends and not acks_wanted(settings)
        self._clock = clock

    def close(self) -> None:
        self._client.close()

    def export(self, request: ExportMetricsServiceRequest) -> ExportResult:
        """Record the export; raises BadPoint (malformed, nothing written) or a RedisError."""
        mapped = self._mapper.map(request)
        now_s = self._clock()
        points = self._in_window(mapped, now_s)
        if mapped.unmapped:
            self._count_unmapped(mapped)
        contended = self.record(points, now_s)
        if contended:
            mapped.reject(contended, "points of streams other exports were taking; retry")
        return ExportResult(mapped.rejected, mapped.message())

    def record(self, points: Sequence[Placed], now_s: float, *, take: bool = True) -> int:
        """Record placed points of any source (OTLP's, the engine scraper's): a cumulative
        point as the delta from its stream's last, a delta point as it is. Returns how many
        cumulative points other writers kept taking (not recorded; the sender retries).

        `take=False` claims the cumulative points' states and writes nothing: a baseline
        (the scraper's first sight of an engine, whose counts since its start nobody saw
        happen, so none of them belongs to this instant)."""
        deltas, contended = self._streams.deltas([p for p in points if p.cumulative])
        if not take:
            return contended
        batches = [self._encode([delta], delta.batch_id, now_s) for delta in deltas]
        fresh = [Delta(p, p.bins, "") for p in points if not p.cumulative]
        if fresh:
            batches.append(self._encode(fresh, _content_id(fresh), now_s))
        self._write([batch for batch in batches if batch is not None])
        return contended

    def _in_window(self, mapped: Mapped, now_s: float) -> list[Placed]:
        """The points whose stamp the store keeps buckets for; the rest refused."""
        oldest = now_s - self._settings.retention.retention_s
        newest = now_s + max(MIN_FUTURE_S, self._settings.recording.clock_skew_tolerance_s)
        kept = [p for p in mapped.points if oldest <= p.time_ns / 1e9 <= newest]
        if len(kept) < len(mapped.points):
            mapped.reject(len(mapped.points) - len(kept), "points stamped outside the kept window")
        return kept

    def _count_unmapped(self, mapped: Mapped) -> None:
        pipe = self._client.pipeline(transaction=False)
        for series, count in mapped.unmapped.items():
            pipe.hincrby(self._unmapped_key, series, count)
        pipe.execute()

    def _encode(self, deltas: Sequence[Delta], batch_id: str, now_s: float) -> EncodedBatch | None:
        query_sums, histograms = self._sums(deltas)
        if not query_sums and not histograms.sums:
            return None
        # The shard follows the id: a retry must meet its first attempt's marker.
        encoder = self._encoders[int(batch_id[-8:], 16) % len(self._encoders)]
        return encoder.encode_sums(query_sums, histograms, batch_id, now_s)

    def _write(self, batches: Sequence[EncodedBatch]) -> None:
        """Every batch, in one pipeline where the topology allows it (one server, no replica
        acknowledgement asked); else one after the other, each as the collector writes it."""
        if len(batches) < 2 or not self._pipelined:
            for encoded in batches:
                write_batch(self._client, self._ingest, encoded.keys, encoded.args, self._topology)
            return

        def send() -> None:
            pipe = self._client.pipeline(transaction=False)
            for encoded in batches:
                self._ingest.queue(pipe, encoded.keys, encoded.args)
            pipe.execute()

        # Sent again whole after NOSCRIPT: each batch's marker makes what landed a no-op.
        self._ingest.reloading(self._client, send, send)

    def _sums(self, deltas: Sequence[Delta]) -> tuple[QuerySums, HistogramSums]:
        bucket_s = self._settings.retention.bucket_s
        query_sums: QuerySums = defaultdict(lambda: [0, 0.0, 0, 0])
        histograms = HistogramSums()
        for delta in deltas:
            point, bins = delta.point, delta.bins
            if bins.count <= 0:
                continue
            fine = int(point.time_ns // 1_000_000_000) // bucket_s * bucket_s
            if point.role == TOKENS:
                query_sums[fine, point.tier][3] += round(bins.total)
                continue
            if point.role in (ERRORS, FAILURES):
                cell = query_sums[fine, point.tier]
                cell[0] += bins.count if point.role == FAILURES else 0
                cell[2] += bins.count
                continue
            if point.role == LATENCY:
                cell = query_sums[fine, point.tier]
                cell[0] += bins.count
                cell[1] += bins.total
                cell[2] += bins.count if point.error else 0
            key = (fine, FIGURES[point.role], point.tier)
            histograms.sums[key] += bins.total
            for index, count in bins.bins.items():
                histograms.bins[key][index] += count
            if bins.error > 0.0:  # stated by /latency for this tier and window
                histograms.bins[key][f"{HISTOGRAM_ERROR}{math.ceil(bins.error * 1e6)}"] += (
                    bins.count
                )
        return query_sums, histograms


def _content_id(deltas: Sequence[Delta]) -> str:
    """The same for the same delta points sent again: a retried export's batch id."""
    parts = sorted(
        (
            d.point.stream,
            d.point.start_ns,
            d.point.time_ns,
            d.bins.count,
            d.bins.total,
            *sorted(d.bins.bins.items()),
        )
        for d in deltas
    )
    return "otlp-" + hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
