"""Exponential backoff with full jitter, for every loop that waits out a Redis or network outage.

Full jitter (a uniform delay between 0 and the exponential ceiling) spreads the retries of many
replicas or clients that lost the same server at the same moment, so they do not all come back
in lock step and hammer it together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for consecutive failures: uniform(0, min(cap_s, base_s * 2**n)).

    >>> backoff = Backoff(base_s=0.5, cap_s=30.0)
    >>> delay = backoff.next_delay()   # after a failure
    >>> backoff.reset()                # after a success
    """

    base_s: float = 0.1
    cap_s: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def ceiling_s(self) -> float:
        """The largest delay the next failure may wait."""
        # The exponent is capped so a long outage never overflows a float.
        return min(self.cap_s, self.base_s * 2.0 ** min(self.failures, 32))

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before the next try."""
        delay = self.rng.uniform(0.0, self.ceiling_s())
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
