"""The fault scheduler: every 10 to 20 s (seeded), one fault of a random kind, logged."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.soak.stores import SoakStore

GAP_S = (10.0, 20.0)


@dataclass
class FaultLog:
    """What was injected: per kind, how many took and how many could not be given."""

    injected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)
    # (epoch s, kind) of each fault given, to place a lost event near one.
    given: list[tuple[float, str]] = field(default_factory=list)


class FaultScheduler:
    """Injects faults into `store` from start until `until_s` (monotonic), on a thread."""

    def __init__(self, store: SoakStore, seed: int, started_s: float, until_s: float) -> None:
        self._store = store
        self._random = random.Random(seed)
        self._started_s = started_s
        self._until_s = until_s
        self._stop = threading.Event()
        self.log = FaultLog()
        self._thread = threading.Thread(target=self._run, name="soak-faults", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Wait for the fault under way, if any, to be over; no new one starts."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            gap_s = self._random.uniform(*GAP_S)
            if time.monotonic() + gap_s > self._until_s or self._stop.wait(gap_s):
                return
            self._inject(self._random.choice(self._store.kinds))

    def _inject(self, kind: str) -> None:
        at_s, at_epoch_s = time.monotonic() - self._started_s, time.time()
        try:
            what = self._store.inject(kind)
        except Exception as exc:  # a fault that could not be given is logged, not fatal
            self.log.failed[kind] += 1
            self._say(f"[{at_s:6.1f} s] fault {kind}: NOT GIVEN ({type(exc).__name__}: {exc})")
            return
        self.log.injected[kind] += 1
        self.log.given.append((at_epoch_s, kind))
        took_s = time.monotonic() - self._started_s - at_s
        self._say(f"[{at_s:6.1f} s] fault {kind}: {what} (over in {took_s:.1f} s)")

    def _say(self, line: str) -> None:
        self.log.lines.append(line)
        print(line, flush=True)
