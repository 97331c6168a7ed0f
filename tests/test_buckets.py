from __future__ import annotations

import itertools

import pytest

from metrics_store.buckets import bucket_start, chart_starts, plan_window


def test_bucket_start_aligns_to_the_epoch() -> None:
    assert bucket_start(1_700_000_025.9, 10) == 1_700_000_020
    assert bucket_start(1_700_000_020.0, 10) == 1_700_000_020
    assert bucket_start(1_700_000_019.999, 10) == 1_700_000_010
    assert bucket_start(59.0, 60) == 0


def test_chart_starts_end_with_the_bucket_holding_now() -> None:
    starts = chart_starts(1_700_000_025.0, 10, 18)
    assert len(starts) == 18
    assert starts[-1] == 1_700_000_020
    assert starts[0] == 1_700_000_020 - 170
    assert all(b - a == 10 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize("now", [1_700_000_025.0, 1_700_000_040.0, 1_700_000_059.9, 0.0, 123.4])
def test_window_plan_tiles_the_window_exactly(now: float) -> None:
    plan = plan_window(now, 10, 60, 1800)
    assert plan.end_s == bucket_start(now, 10) + 10
    assert plan.end_s - plan.start_s == 1800
    covered = sorted(
        [(s, s + 10) for s in plan.fine_starts] + [(s, s + 60) for s in plan.rollup_starts]
    )
    assert covered[0][0] == plan.start_s
    assert covered[-1][1] == plan.end_s
    for (_, end), (start, _) in itertools.pairwise(covered):
        assert end == start  # no gap, no overlap
    assert all(s % 60 == 0 for s in plan.rollup_starts)
    assert len(plan.fine_starts) + len(plan.rollup_starts) <= 5 + 30 + 5


def test_window_shorter_than_a_rollup_uses_fine_buckets_only() -> None:
    plan = plan_window(1_700_000_025.0, 10, 60, 30)
    assert plan.rollup_starts == ()
    assert plan.fine_starts == (1_700_000_000, 1_700_000_010, 1_700_000_020)
