"""Pure time-bucket arithmetic: which buckets a moment, a chart or a window needs. No Redis."""

from __future__ import annotations

from dataclasses import dataclass


def bucket_start(moment_s: float, size_s: int) -> int:
    """Start of the bucket of `size_s` seconds holding `moment_s` (buckets align to the epoch)."""
    return int(moment_s // size_s) * size_s


def chart_starts(now_s: float, size_s: int, points: int) -> list[int]:
    """Starts of the last `points` buckets, oldest first, the last one holding now."""
    current = bucket_start(now_s, size_s)
    return [current - size_s * (points - 1 - i) for i in range(points)]


@dataclass(frozen=True)
class WindowPlan:
    """The buckets that exactly tile a window: fine buckets at the ragged edges, rollups inside."""

    start_s: int
    end_s: int
    fine_starts: tuple[int, ...]
    rollup_starts: tuple[int, ...]


def plan_window(now_s: float, bucket_s: int, rollup_s: int, window_s: int) -> WindowPlan:
    """Tile the window ending with the current fine bucket, using as few buckets as possible.

    The window is [end - window_s, end) where end is the end of the fine bucket holding now.
    Whole rollup buckets inside it are read as one key each; the rest as fine buckets. With the
    defaults (10 s, 60 s, 30 min) a window costs at most 5 + 30 + 5 keys instead of 180.
    """
    end = bucket_start(now_s, bucket_s) + bucket_s
    start = end - window_s
    first_rollup = -(-start // rollup_s) * rollup_s
    last_rollup_end = (end // rollup_s) * rollup_s
    if first_rollup >= last_rollup_end:
        fine = tuple(range(start, end, bucket_s))
        return WindowPlan(start, end, fine, ())
    rollups = tuple(range(first_rollup, last_rollup_end, rollup_s))
    fine = tuple(range(start, first_rollup, bucket_s)) + tuple(
        range(last_rollup_end, end, bucket_s)
    )
    return WindowPlan(start, end, fine, rollups)
