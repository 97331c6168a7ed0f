"""An OTLP export recorded: mapped, made deltas, written as aggregate batches.

OTLP points are aggregates, not events, so they are written as the ingest script's counters
and histograms (record/batch.py `encode_sums`): per tier and fine bucket the query count,
errors, latency sum, tokens, and each figure's bins; no stream entry, no recent-list push.
An export's cumulative points are one batch per shard (one on a single Redis), which claims
their streams' states as it writes their deltas (temporality.py): a retried export, on any
replica, finds its points taken and adds nothing. Delta points have no state to tell a retry
by: their batch's id is a hash of their content, the same for the same export sent again.
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from metrics_store.record.batch import (
    BatchEncoder,
    Claim,
    EncodedBatch,
    HistogramSums,
    QuerySums,
)
from metrics_store.redis.keys import (
    FIGURE_LATENCY,
    FIGURE_QUEUE,
    FIGURE_TPOT,
    FIGURE_TTFT,
    HISTOGRAM_ERROR,
    Keys,
)
from metrics_store.redis.replica_ack import write_batch
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
        self._shards = self._topology.shards
        self._encoders = [BatchEncoder(settings, s, control) for s in self._shards]
        self._mapper = ExportMapper(settings)
        # A stream's state outlives any pause of its exporter that the store's history spans:
        # lost, the stream's next point would count all it holds since its start again.
        self._state_ttl_s = max(settings.retention.history_s, settings.recording.batch_id_ttl_s)
        self._streams = CumulativeStreams(self._client)
        self._unmapped_key = keys.otlp_unmapped
        self._ingest = lua_script(INGEST)
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
        contended = 0
        for shard, streams in _by_shard([p for p in points if p.cumulative], self._shards).items():
            write = partial(self._write_steps, shard, now_s=now_s, take=take)
            contended += self._streams.take(streams, self._shards[shard], write)
        fresh = [Delta(p, p.bins) for p in points if not p.cumulative]
        if fresh and take:
            encoded = self._encode(fresh, _content_id(fresh), now_s)
            if encoded is not None:
                self._write(encoded)
        return contended

    def _write_steps(
        self, shard: int, deltas: list[Delta], claims: list[Claim], *, now_s: float, take: bool
    ) -> dict[str, bytes] | None:
        """One call: the deltas' sums with the claims that take them (temporality.py `Write`)."""
        query_sums, histograms = self._sums(deltas if take else [])
        encoded = self._encoders[shard].encode_sums(
            query_sums, histograms, _claims_id(claims), now_s, claims, self._state_ttl_s
        )
        reply = self._write(encoded)
        if not isinstance(reply, list):
            return None  # written (or -1: this very call was written before)
        return {encoded.keys[int(index) - 1]: found for index, found in _pairs(reply)}

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

    def _write(self, encoded: EncodedBatch) -> object:
        return write_batch(self._client, self._ingest, encoded.keys, encoded.args, self._topology)

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


def _by_shard(points: Sequence[Placed], shards: Sequence[Keys]) -> dict[int, list[Placed]]:
    """The points by the shard their stream's state and deltas live on: the same for every
    replica, so each stream's state has one home."""
    out: dict[int, list[Placed]] = defaultdict(list)
    for point in points:
        out[zlib.crc32(point.stream.encode()) % len(shards)].append(point)
    return out


def _pairs(reply: list[Any]) -> Iterator[tuple[Any, Any]]:
    return zip(reply[::2], reply[1::2], strict=True)


def _claims_id(claims: Sequence[Claim]) -> str:
    """The batch's marker: the same only for the same states moved on the same way."""
    parts = sorted((c.key, c.expected, c.state[:16]) for c in claims)
    return "otlp-" + hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


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
