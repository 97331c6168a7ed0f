"""Error budgets and burn rates, from good and total counts: pure arithmetic, no Redis.

The budget of an objective is the share of queries it may fail, 1 - target, over its
compliance window. The burn rate over a window is how fast that window spent it: its bad
share divided by the budget share, so 1 spends the budget exactly over the compliance window
and 14.4 spends 2 % of a 30-day budget in one hour.

Alerts follow the multi-window, multi-burn-rate rule of Google's SRE workbook: a pair fires
when both its long and its short window burn at least at its factor (the short one makes the
alert stop soon after the burning does). The two fastest pairs page, the two slowest open a
ticket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OK, TICKET, PAGE = "ok", "ticket", "page"
SEVERITY = {OK: 0, TICKET: 1, PAGE: 2}


@dataclass(frozen=True)
class BurnPair:
    long_s: int
    short_s: int
    factor: float
    severity: str

    @property
    def label(self) -> str:
        return f"{span(self.long_s)}/{span(self.short_s)}"


BURN_PAIRS = (
    BurnPair(3600, 300, 14.4, PAGE),
    BurnPair(6 * 3600, 1800, 6.0, PAGE),
    BurnPair(86_400, 2 * 3600, 3.0, TICKET),
    BurnPair(3 * 86_400, 6 * 3600, 1.0, TICKET),
)
# Every window a burn rate is taken over, shortest first.
BURN_WINDOWS_S = tuple(sorted({s for p in BURN_PAIRS for s in (p.long_s, p.short_s)}))


@dataclass(frozen=True)
class Counts:
    good: int
    total: int

    @property
    def bad(self) -> int:
        return self.total - self.good


def burn_rate(counts: Counts, target: float) -> float | None:
    """How many times faster than the budget allows the window failed (None with no query)."""
    if counts.total <= 0:
        return None
    return (counts.bad / counts.total) / (1.0 - target)


@dataclass(frozen=True)
class PairState:
    pair: BurnPair
    long_rate: float | None
    short_rate: float | None

    @property
    def firing(self) -> bool:
        """Both windows burn at least the pair's factor (a window with no query does not)."""
        factor = self.pair.factor
        return all(
            rate is not None and rate >= factor for rate in (self.long_rate, self.short_rate)
        )


@dataclass(frozen=True)
class Budget:
    """An objective's standing: its rates, its budget left and what to do about it."""

    rates: dict[int, float | None]  # window (s) -> burn rate; None: no query in it
    pairs: list[PairState]
    remaining_ratio: float  # 1: untouched; 0: spent; below 0: overspent
    exhausted_in_s: float | None  # at the last hour's burn rate; None: not burning
    state: str


def assess(
    windows: Mapping[int, Counts], compliance: Counts, target: float, window_s: int
) -> Budget:
    """The objective's budget from its counts over each burn window and its compliance one."""
    rates = {span: burn_rate(windows[span], target) for span in BURN_WINDOWS_S}
    pairs = [PairState(p, rates[p.long_s], rates[p.short_s]) for p in BURN_PAIRS]
    state = OK
    for pair in pairs:
        if pair.firing and SEVERITY[pair.pair.severity] > SEVERITY[state]:
            state = pair.pair.severity
    allowed = (1.0 - target) * compliance.total
    remaining = 1.0 if compliance.total == 0 else 1.0 - compliance.bad / allowed
    return Budget(rates, pairs, remaining, _exhausted_in(remaining, rates[3600], window_s), state)


def _exhausted_in(remaining: float, hourly_rate: float | None, window_s: int) -> float | None:
    """Seconds until the budget is spent if the last hour's burn goes on: a rate of 1 spends
    all of it in `window_s`."""
    if remaining <= 0:
        return 0.0
    if hourly_rate is None or hourly_rate <= 0:
        return None
    return remaining * window_s / hourly_rate


def span(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
