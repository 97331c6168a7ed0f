"""Exponential histogram bins for latency distributions. Pure arithmetic: no Redis, no clock.

The bins are Prometheus native-histogram schema 5 over seconds: bin `i` holds the values in
(2^((i-1)/32), 2^(i/32)] seconds, so each power of two seconds is a bin boundary and a
histogram of any window is the bin-wise sum of its buckets' histograms (exact to merge).
A value is reported as its bin's representative, 2 * upper / (1 + GAMMA): no value of the bin
is further than RELATIVE_ERROR from it. Zero (and only zero) has a bin of its own, ZERO_BIN.

Quantiles follow the store's contract (docs/latency.md): for p in [0, 1] over n values, the
answer lies between (1 - e) x_lo and (1 + e) x_hi, where x_lo and x_hi are the sorted values
of ranks floor(p (n-1)) and ceil(p (n-1)): we interpolate linearly between those ranks' bin
representatives, as numpy's default quantile interpolates between the values themselves.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

SCHEMA = 5
BINS_PER_DOUBLING = 1 << SCHEMA  # 32
GAMMA = 2.0 ** (1.0 / BINS_PER_DOUBLING)  # ~1.0219
# The worst relative distance of a bin's value from its representative: (GAMMA-1)/(GAMMA+1)
# = 0.01083. The figure reported rounds it up, leaving room for floating-point rounding.
BIN_RELATIVE_ERROR = (GAMMA - 1.0) / (GAMMA + 1.0)
RELATIVE_ERROR = 0.011
# No positive float reaches this index (the smallest subnormal, 2^-1074 s, has -34368).
ZERO_BIN = -1_000_000
# Below this (10^-300 ms) a value counts as zero: dividing by 1000 would reach the subnormal
# floats, whose log2 and bin bounds lose their precision (or underflow to 0).
SMALLEST_MS = 1e-300
# Classic `le` edges (seconds) for fixed-bucket exposition (the `/metrics` histograms):
# the powers of two from 2^-10 s (~1 ms) to 2^7 s (128 s). Each is a bin boundary, so the
# coarsened counts are exact, not estimates; +Inf (the total) follows the last.
LE_EDGES_S: tuple[float, ...] = tuple(2.0**k for k in range(-10, 8))


def relative_error_with(conversion: float) -> float:
    """The bound of a quantile from bins whose values came with a `conversion` error first
    (a coarser histogram's bucket moved to one of ours): the two errors compound."""
    if conversion <= 0.0:
        return RELATIVE_ERROR
    return math.ceil(((1.0 + conversion) * (1.0 + RELATIVE_ERROR) - 1.0) * 10_000) / 10_000


def bin_index(value_ms: float) -> int:
    """The bin holding `value_ms` (>= 0; bins are over seconds): the `i` with
    upper_bound_s(i - 1) < seconds <= upper_bound_s(i)."""
    if value_ms < SMALLEST_MS:
        return ZERO_BIN
    seconds = value_ms / 1000.0
    # Within the table (1 us to 17 min, every latency a server sees): a binary search of the
    # bounds themselves, in C: 0.75x the arithmetic's time on the collector's hot path.
    at = bisect_left(_TABLE_BOUNDS, seconds)
    if 0 < at < len(_TABLE_BOUNDS):
        return _TABLE_FIRST + at
    return _computed_bin_index(seconds)


def bin_counts(values_ms: Sequence[float]) -> dict[int, int]:
    """How many of `values_ms` each bin holds (bin_index of each, counted): the table's binary
    search mapped over them all at once, the rare value outside it one by one."""
    seconds = [value / 1000.0 for value in values_ms]
    positions = Counter(map(bisect_left, repeat(_TABLE_BOUNDS), seconds))
    last = len(_TABLE_BOUNDS)
    counts: dict[int, int] = {}
    outside = False
    for at, count in positions.items():
        if 0 < at < last:
            counts[_TABLE_FIRST + at] = count
        else:
            outside = True
    if outside:  # zeros, and values under a microsecond or over 17 minutes
        for value_ms, value_s in zip(values_ms, seconds, strict=True):
            if not 0 < bisect_left(_TABLE_BOUNDS, value_s) < last:
                index = bin_index(value_ms)
                counts[index] = counts.get(index, 0) + 1
    return counts


def _computed_bin_index(seconds: float) -> int:
    index = math.ceil(math.log2(seconds) * BINS_PER_DOUBLING)
    # log2 may round across a boundary: settle against the boundaries themselves.
    if seconds > upper_bound_s(index):
        return index + 1
    if seconds <= upper_bound_s(index - 1):
        return index - 1
    return index


def upper_bound_s(index: int) -> float:
    """The upper edge of bin `index`, in seconds (inclusive)."""
    bound: float = 2.0 ** (index / BINS_PER_DOUBLING)
    return bound


# The upper bounds of bins 2^-20 s to 2^10 s, in order: bin_index's table.
_TABLE_FIRST = -20 * BINS_PER_DOUBLING
_TABLE_BOUNDS = [upper_bound_s(i) for i in range(_TABLE_FIRST, 10 * BINS_PER_DOUBLING + 1)]


def representative_ms(index: int) -> float:
    """The value reported for bin `index`, in ms: within BIN_RELATIVE_ERROR of all it holds."""
    if index == ZERO_BIN:
        return 0.0
    value: float = 2.0 * upper_bound_s(index) / (1.0 + GAMMA) * 1000.0
    return value


@dataclass(frozen=True)
class Summary:
    """Summary of one histogram: count, mean and the contract's quantiles, in ms."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float


QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def quantiles(bins: Mapping[int, int], ps: Iterable[float]) -> list[float]:
    """The quantiles `ps` (each in [0, 1]) of the values counted in `bins`, in ms.

    0 for every p when the histogram is empty.
    """
    ordered = sorted((index, count) for index, count in bins.items() if count > 0)
    total = sum(count for _, count in ordered)
    wanted = list(ps)
    if total == 0:
        return [0.0] * len(wanted)
    out = []
    for p in wanted:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {p!r}")
        rank = p * (total - 1)
        low, high = math.floor(rank), math.ceil(rank)
        x_low, x_high = _value_at_rank(ordered, low), _value_at_rank(ordered, high)
        out.append(x_low + (rank - low) * (x_high - x_low))
    return out


def _value_at_rank(ordered: list[tuple[int, int]], rank: int) -> float:
    """The representative of the bin holding the value of 0-based `rank`."""
    seen = 0
    for index, count in ordered:
        seen += count
        if rank < seen:
            return representative_ms(index)
    return representative_ms(ordered[-1][0])


def summarize(bins: Mapping[int, int], sum_ms: float) -> Summary:
    """The contract's distribution `D` of a histogram and the exact sum of its values."""
    count = sum(bins.values())
    if count == 0:
        return Summary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    # Six significant digits, not 2 decimals: a 0.4 ms value rounded to 0.0 would break the bound.
    p50, p90, p95, p99, p999 = (float(f"{q:.6g}") for q in quantiles(bins, QUANTILES))
    return Summary(count, round(sum_ms / count, 2), p50, p90, p95, p99, p999)


def le_counts(bins: Mapping[int, int]) -> list[int]:
    """Cumulative counts at each of LE_EDGES_S, then +Inf (the total): classic buckets."""
    edges = [round(math.log2(edge) * BINS_PER_DOUBLING) for edge in LE_EDGES_S]
    cumulative = [0] * (len(edges) + 1)
    for index, count in bins.items():
        for position, edge in enumerate(edges):
            if index <= edge:  # bin's upper bound <= the edge: all its values are <= it
                cumulative[position] += count
        cumulative[-1] += count
    return cumulative
