"""OTLP histogram points in our bins (metrics_store/histogram.py: schema 5 over seconds).

An OTel exponential histogram of scale s has base 2^(2^-s), and its bucket j holds the values in
(base^j, base^(j+1)]; our bin i holds (2^((i-1)/32), 2^(i/32)]: the scale is the Prometheus
schema and the index is one less. At scale 5 or finer each OTel bucket lies inside exactly one
of our bins, so the counts carry over exactly. A coarser bucket spans several of our bins: its
count goes to the bin of its midpoint (2LU/(L+U), the point nearest every value of (L, U] in
relative terms) and the conversion's error, (U-L)/(U+L), is stated with the point.
Explicit-bucket histograms convert the same way, bucket by bucket, with their own error; a
bucket open at either end has error 1 (its values are told apart from 0 and 2L only).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
)

from metrics_store.histogram import SCHEMA, ZERO_BIN, bin_index

# OTel's duration units, as the factor to our ms; exponential buckets align with our bins only
# over seconds.
UNIT_MS = {"s": 1000.0, "": 1000.0, "ms": 1.0}
# A bucket told apart from 0 or from twice its lower bound only (open at an end).
OPEN_BUCKET_ERROR = 1.0


class BadPoint(ValueError):
    """A data point no histogram can have: the whole export is malformed (400)."""


@dataclass
class Bins:
    """One histogram in our bins: count, sum (in the figure's unit: ms, or tokens), bins."""

    count: int = 0
    total: float = 0.0
    bins: dict[int, int] = field(default_factory=dict)
    # The conversion's own relative error (0: exact, within our bins' RELATIVE_ERROR).
    error: float = 0.0

    def add(self, index: int, count: int) -> None:
        if count:
            self.bins[index] = self.bins.get(index, 0) + count


def _checked_sum(point: HistogramDataPoint | ExponentialHistogramDataPoint, factor: float) -> float:
    if not point.HasField("sum"):
        raise BadPoint("a histogram point without a sum")
    if not math.isfinite(point.sum) or point.sum < 0:
        raise BadPoint(f"a histogram sum of {point.sum!r}: durations and tokens are >= 0")
    return point.sum * factor


def _midpoint_bin(low_s: float, high_s: float) -> tuple[int, float]:
    """Our bin for the values of (low, high] seconds, and the relative error of taking it."""
    if low_s <= 0.0:
        return ZERO_BIN, OPEN_BUCKET_ERROR
    if math.isinf(high_s):
        return bin_index(2.0 * low_s * 1000.0), OPEN_BUCKET_ERROR
    middle = 2.0 * low_s * high_s / (low_s + high_s)
    return bin_index(middle * 1000.0), (high_s - low_s) / (high_s + low_s)


def from_exponential(point: ExponentialHistogramDataPoint, unit: str) -> Bins:
    """The point in our bins; exact at scale 5 or finer (over seconds)."""
    if unit not in ("s", ""):
        raise ValueError(f"exponential histograms are taken in seconds, not {unit!r}")
    out = Bins(count=point.count, total=_checked_sum(point, 1000.0))
    if any(point.negative.bucket_counts):
        raise BadPoint("negative durations in an exponential histogram")
    if point.zero_count:
        out.add(ZERO_BIN, point.zero_count)
        if point.zero_threshold > 0.0:
            out.error = OPEN_BUCKET_ERROR
    # Read once: each access to a protobuf field crosses into its C implementation.
    counts: Sequence[int] = list(point.positive.bucket_counts)
    offset, scale = point.positive.offset, point.scale
    if scale >= SCHEMA:
        _add_finer(out.bins, counts, offset, scale - SCHEMA)
    else:
        base = 2.0 ** (2.0**-scale)
        for k, count in enumerate(counts):
            if count:
                low = base ** (offset + k)
                index, error = _midpoint_bin(low, low * base)
                out.add(index, count)
                out.error = max(out.error, error)
    _check_count(out, point.count)
    return out


def _add_finer(bins: dict[int, int], counts: Sequence[int], offset: int, shift: int) -> None:
    """Buckets 2^shift times finer than ours: bucket j lies in our bin (j >> shift) + 1, so
    each bin takes a run of 2^shift buckets, summed as a slice (a cumulative point holds
    hundreds of buckets each export: this loop is most of its conversion)."""
    at, end = 0, len(counts)
    index = offset >> shift  # our bin, less one, of the first bucket
    while at < end:
        upto = ((index + 1) << shift) - offset  # past the last bucket of this bin
        count = sum(counts[at:upto])
        if count:
            bins[index + 1] = bins.get(index + 1, 0) + count
        at, index = upto, index + 1


def from_explicit(point: HistogramDataPoint, unit: str) -> Bins:
    """The point in our bins, each bucket at its midpoint, with the worst bucket's error."""
    factor = UNIT_MS.get(unit)
    if factor is None:
        raise ValueError(f"durations are taken in s or ms, not {unit!r}")
    bounds = [bound * factor / 1000.0 for bound in point.explicit_bounds]
    total_ms = _checked_sum(point, factor)
    return explicit_bins(bounds, list(point.bucket_counts), point.count, total_ms)


def explicit_bins(
    bounds_s: Sequence[float], counts: Sequence[int], count: int, total_ms: float
) -> Bins:
    """Explicit buckets in our bins: `counts[k]` values in (bounds[k-1], bounds[k]] seconds,
    the last one above every bound. OTLP's explicit histograms and Prometheus's classic ones
    (sources/engines/) both convert here, each bucket at its midpoint, with the worst error."""
    if any(not math.isfinite(b) for b in bounds_s) or any(
        a >= b for a, b in itertools.pairwise(bounds_s)
    ):
        raise BadPoint("explicit bounds must be finite and increasing")
    if len(counts) != len(bounds_s) + 1:
        raise BadPoint(f"{len(counts)} bucket counts for {len(bounds_s)} bounds")
    if any(bucket_count < 0 for bucket_count in counts):
        raise BadPoint("a bucket with a negative count")
    out = Bins(count=count, total=total_ms)
    edges = [-math.inf, *bounds_s, math.inf]
    for k, bucket_count in enumerate(counts):
        if bucket_count:
            low, high = edges[k], edges[k + 1]
            exact_zero = high <= 0.0  # only 0 can be there: durations are >= 0
            index, error = (ZERO_BIN, 0.0) if exact_zero else _midpoint_bin(low, high)
            out.add(index, bucket_count)
            out.error = max(out.error, error)
    _check_count(out, count)
    return out


def _check_count(out: Bins, count: int) -> None:
    held = sum(out.bins.values())
    if held != count:
        raise BadPoint(f"a histogram count of {count} but {held} in its buckets")


def totals_only(point: HistogramDataPoint | ExponentialHistogramDataPoint) -> Bins:
    """Count and sum alone (token usage: only the sum, the tokens, is kept)."""
    return Bins(count=point.count, total=_checked_sum(point, 1.0))
