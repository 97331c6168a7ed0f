"""The exponential bins: placement, representatives, quantiles and classic `le` edges."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from metrics_store.histogram import (
    BIN_RELATIVE_ERROR,
    LE_EDGES_S,
    RELATIVE_ERROR,
    ZERO_BIN,
    bin_counts,
    bin_index,
    le_counts,
    quantiles,
    representative_ms,
    summarize,
    upper_bound_s,
)


def histogram(values: list[float]) -> dict[int, int]:
    bins: dict[int, int] = {}
    for value in values:
        index = bin_index(value)
        bins[index] = bins.get(index, 0) + 1
    return bins


def test_each_value_lies_in_its_bin_and_near_its_representative() -> None:
    rng = random.Random(7)
    values = [10 ** rng.uniform(-6, 7.9) for _ in range(20_000)] + [1000.0, 2000.0, 0.5, 1e-300]
    for value in values:
        index = bin_index(value)
        assert upper_bound_s(index - 1) < value / 1000 <= upper_bound_s(index)
        assert abs(representative_ms(index) - value) <= BIN_RELATIVE_ERROR * value * (1 + 1e-9)
    assert BIN_RELATIVE_ERROR < RELATIVE_ERROR <= 0.011


def test_powers_of_two_seconds_are_bin_boundaries() -> None:
    assert bin_index(1000.0) == 0  # 1 s is the upper edge of bin 0
    assert bin_index(1000.0000001) == 1
    assert bin_index(2000.0) == 32
    assert bin_index(500.0) == -32


def test_zero_has_its_own_bin_reported_as_zero() -> None:
    assert bin_index(0.0) == ZERO_BIN
    assert representative_ms(ZERO_BIN) == 0.0
    assert quantiles({ZERO_BIN: 3, bin_index(5.0): 1}, [0.5]) == [0.0]


def test_empty_histogram_reports_zeros() -> None:
    assert quantiles({}, [0.5, 0.99]) == [0.0, 0.0]
    empty = summarize({}, 0.0)
    assert (empty.count, empty.mean, empty.p50, empty.p999) == (0, 0.0, 0.0, 0.0)


def test_quantiles_are_within_the_bound_of_numpys_order_statistics() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(6, 1.2, 50_000), np.full(5_000, 250.0), [0.0] * 10])
    bins = histogram([float(v) for v in values])
    ordered = np.sort(values)
    ps = [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    for p, estimate in zip(ps, quantiles(bins, ps), strict=True):
        rank = p * (len(ordered) - 1)
        x_lo, x_hi = ordered[math.floor(rank)], ordered[math.ceil(rank)]
        assert (1 - RELATIVE_ERROR) * x_lo <= estimate <= (1 + RELATIVE_ERROR) * x_hi, p


def test_summary_keeps_the_exact_mean_and_small_values() -> None:
    summary = summarize(histogram([0.4, 0.4, 0.4]), 1.2)
    assert summary.count == 3
    assert summary.mean == 0.4
    assert summary.p50 == pytest.approx(0.4, rel=RELATIVE_ERROR)


def test_bad_quantile_is_refused() -> None:
    with pytest.raises(ValueError, match="quantile"):
        quantiles({0: 1}, [1.5])


def test_le_counts_coarsen_the_bins_exactly() -> None:
    values = [0.5, 1.0, 1.5, 3.0, 999.0, 1000.0, 1001.0, 200_000.0, 0.0]
    cumulative = le_counts(histogram(values))
    expected = [sum(v / 1000 <= edge for v in values) for edge in LE_EDGES_S] + [len(values)]
    assert cumulative == expected


def test_values_too_small_for_normal_floats_count_as_zero() -> None:
    # 5e-324 ms is the smallest float; in seconds it would underflow (log2 of 0 is an error).
    assert bin_index(5e-324) == bin_index(0.0) == ZERO_BIN
    assert bin_index(1e-300) != ZERO_BIN


def test_the_table_and_the_arithmetic_put_every_bound_and_its_neighbours_in_one_bin() -> None:
    """bin_index searches a table of bounds where it can: at each bound, and the floats just
    beside it, it answers as the definition (upper_bound_s(i-1) < s <= upper_bound_s(i))."""
    for index in range(-22 * 32, 12 * 32):
        bound = upper_bound_s(index)
        for seconds in (math.nextafter(bound, 0.0), bound, math.nextafter(bound, math.inf)):
            found = bin_index(seconds * 1000.0)
            assert upper_bound_s(found - 1) < (seconds * 1000.0) / 1000.0 <= upper_bound_s(found)


def test_bin_counts_count_each_value_in_its_bin_as_bin_index_does() -> None:
    rng = random.Random(11)
    values = [10 ** rng.uniform(-7, 9) for _ in range(5_000)] + [0.0, 1e-301, 1000.0, 2e6]
    want: dict[int, int] = {}
    for value in values:
        want[bin_index(value)] = want.get(bin_index(value), 0) + 1
    assert bin_counts(values) == want
