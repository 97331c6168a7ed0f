"""The accuracy test's data: 10^6 heavy-tailed latencies with point masses, and their stamps.

Imported by the test and by each recording child process, which takes every 4th event from
its own offset: both regenerate the same arrays from the seed.
"""

from __future__ import annotations

import numpy as np

SEED = 14
HOUR = 3600
# Where the events sit before "now": a third in the last 5 minutes, a third 5-30 minutes ago,
# a third spread over the day before that.
SPANS_S = ((0, 300), (300, 1800), (1800, 86_000))


def latencies(n: int) -> np.ndarray:
    """Log-normal body, a slower log-normal mode, a Pareto tail, and point masses."""
    rng = np.random.default_rng(SEED)
    body = rng.lognormal(np.log(300.0), 0.6, n)
    slow = rng.lognormal(np.log(2500.0), 1.0, n)
    tail = 1000.0 * (1.0 + rng.pareto(1.5, n))
    pick = rng.random(n)
    values = np.where(pick < 0.8, body, np.where(pick < 0.95, slow, tail))
    masses = rng.random(n)
    values = np.where(masses < 0.10, 250.0, values)  # many identical values
    values = np.where((masses >= 0.10) & (masses < 0.13), 1000.0, values)  # a bin boundary
    values = np.where((masses >= 0.13) & (masses < 0.135), 0.0, values)  # zeros
    return np.minimum(values, 3_600_000.0)


def ttfts(values: np.ndarray) -> np.ndarray:
    """Time to first token: a share of each latency."""
    rng = np.random.default_rng(SEED + 1)
    return values * rng.uniform(0.05, 0.5, len(values))


def ages_s(n: int) -> np.ndarray:
    """Seconds before now of each event (now - age is its stamp)."""
    rng = np.random.default_rng(SEED + 2)
    span = rng.integers(0, len(SPANS_S), n)
    low = np.array([s[0] for s in SPANS_S])[span]
    high = np.array([s[1] for s in SPANS_S])[span]
    return low + rng.random(n) * (high - low)
