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


@dataclass(frozen=True)
class Level:
    """One bucket size, and how long its buckets are kept after they end."""

    size_s: int
    retention_s: int


def bucket_levels(
    bucket_s: int, rollup_s: int, retention_s: int, history_s: int, hour_history_s: int = 0
) -> list[Level]:
    """Every bucket size the collectors write, finest first.

    Fine and 1-minute buckets serve the recent window (retention_s); two coarser rollups
    (10 and 60 rollup buckets: 10 minutes and 1 hour by default) keep history_s of history,
    so a 7-day window reads about 170 hour buckets plus its edges, not 60,000 fine ones. The
    hour buckets are kept longer where `hour_history_s` asks (the objectives' compliance
    windows: 30 days of hours cost a tenth of 30 days of 10-minute buckets).
    """
    ten, sixty = rollup_s * 10, rollup_s * 60
    return [
        Level(bucket_s, retention_s),
        Level(rollup_s, retention_s),
        Level(ten, history_s + ten),
        Level(sixty, max(history_s, hour_history_s) + sixty),
    ]


@dataclass(frozen=True)
class Tiling:
    """The buckets (size, start) that exactly tile [start_s, end_s)."""

    start_s: int
    end_s: int
    buckets: tuple[tuple[int, int], ...]


def tile_window(end_s: int, window_s: int, now_s: float, levels: list[Level]) -> Tiling:
    """Tile the window ending at `end_s` (a fine-bucket boundary) with as few kept buckets as can.

    Walking back from the end, each step takes the largest bucket aligned there that fits in
    the window and is still kept at its age. Where no kept bucket fits (the old edge of a
    window longer than the fine buckets' retention), the window starts there instead: its
    start moves later by less than the coarsest size needed, and Tiling.start_s says so.
    """
    start = end_s - window_s
    sizes = sorted(levels, key=lambda level: -level.size_s)
    buckets: list[tuple[int, int]] = []
    at = end_s
    while at > start:
        step = _largest_step(at, start, now_s, sizes)
        if step is None:
            break
        at -= step
        buckets.append((step, at))
    buckets.reverse()
    return Tiling(at, end_s, tuple(buckets))


def _largest_step(at: int, start: int, now_s: float, levels: list[Level]) -> int | None:
    for level in levels:
        size = level.size_s
        kept = at + level.retention_s > now_s  # the bucket [at - size, at) retires at `at + kept`
        if at % size == 0 and at - size >= start and kept:
            return size
    return None
