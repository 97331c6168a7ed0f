"""One soak: start Redis, three collector processes, the fault scheduler; count at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from bench.soak.faults import FaultLog, FaultScheduler
from bench.soak.stores import SentinelStore, SingleStore, SoakStore, admin
from bench.soak.tally import ProcessFigures, count_ids, missing_ranges, table, tally
from metrics_store.redis.keys import Keys
from tests.waiting import wait_until

T = TypeVar("T")
PREFIX = "soak"
PROGRESS_EVERY_S = 15.0
# A flush after the last fault waits out a failover or an AOF replay: minutes, never forever.
FLUSH_TIMEOUT_S = 180.0
# A lost event is put down to the last fault before it, if that fault began this recently.
BLAME_WINDOW_S = 30.0


@dataclass(frozen=True)
class SoakOptions:
    seconds: float
    topology: str
    acks: int
    seed: int
    processes: int
    rate: float


class Soak:
    """Runs one soak under `root` (a scratch directory) and returns its figures."""

    def __init__(self, options: SoakOptions, root: Path) -> None:
        self.options = options
        self.root = root
        self._started_epoch_s = 0.0
        self.store: SoakStore = (
            SentinelStore(root / "sentinel", options.acks)
            if options.topology == "sentinel"
            else SingleStore(root)
        )

    def run(self) -> dict[str, Any]:
        o = self.options
        print(f"soak: {o.topology}, {o.seconds / 60:g} min, {o.processes} processes at "
              f"{o.rate:g} events/s, ACK={o.acks}, seed {o.seed}", flush=True)  # fmt: skip
        self.store.start()
        try:
            processes, faults = self._record()
            return self._count(processes, faults)
        finally:
            self.store.stop()

    def _record(self) -> tuple[list[ProcessFigures], FaultLog]:
        started_s, self._started_epoch_s = time.monotonic(), time.time()
        recorders = [self._spawn(n) for n in range(self.options.processes)]
        scheduler = FaultScheduler(
            self.store, self.options.seed, started_s, started_s + self.options.seconds
        )
        scheduler.start()
        self._show_progress(started_s)
        scheduler.join()
        print(f"[{time.monotonic() - started_s:6.1f} s] recording over; flushing", flush=True)
        return [self._report(n, r) for n, r in enumerate(recorders)], scheduler.log

    def _spawn(self, n: int) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            **self.store.env(),
            "METRICS_KEY_PREFIX": PREFIX,
            "METRICS_NODE": f"soak-{n}",
            # The stream must hold every event of the soak to count them one by one.
            "METRICS_STREAM_MAXLEN": "10000000",
            "PYTHONUNBUFFERED": "1",
        }
        args = [str(self.options.seconds), str(self.options.rate), str(FLUSH_TIMEOUT_S)]
        with (self.root / f"soak-{n}.stderr").open("w") as stderr:  # the child keeps its copy
            return subprocess.Popen(
                [sys.executable, "-m", "bench.soak.recorder", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def _show_progress(self, started_s: float) -> None:
        """A line every PROGRESS_EVERY_S until the recording time is over."""
        stream = Keys(PREFIX).query_stream
        while (elapsed_s := time.monotonic() - started_s) < self.options.seconds:
            time.sleep(min(PROGRESS_EVERY_S, self.options.seconds - elapsed_s))
            try:
                stored = str(self._on_primary(lambda client: client.xlen(stream)))
            except (redis.RedisError, OSError, StopIteration) as exc:
                stored = f"? ({type(exc).__name__})"
            print(f"[{time.monotonic() - started_s:6.1f} s] stored so far: {stored}", flush=True)

    def _report(self, n: int, recorder: subprocess.Popen[str]) -> ProcessFigures:
        out, _ = recorder.communicate(timeout=FLUSH_TIMEOUT_S + 60)
        lines = out.strip().splitlines()
        if recorder.returncode != 0 or not lines:
            tail = (self.root / f"soak-{n}.stderr").read_text()[-3000:]
            raise RuntimeError(f"collector soak-{n} failed ({recorder.returncode}): {tail}")
        said = json.loads(lines[-1])
        print(f"soak-{n} says: {lines[-1]}", flush=True)
        # The collector's own count of lost events (buffer drops, refusals, dead letters);
        # flush() raising EventsLost says the same of the events before it.
        lost = max(int(said["dropped"]), int(said["flush_lost"]))
        return ProcessFigures(
            f"soak-{n}", said["recorded"], said["written"], lost, said["flush"], said["started_at"]
        )

    def _count(self, processes: list[ProcessFigures], faults: FaultLog) -> dict[str, Any]:
        ids = self._stored_ids()
        for process in processes:
            tally(process, ids)
        missing = self._missing_times(processes, ids)
        self._show_missing(processes, ids)
        blamed = blame(missing, faults)
        print("\n" + table(processes))
        print("\nfault      given  not given  events missing after it")
        for kind in self.store.kinds:
            print(f"{kind:<10} {faults.injected[kind]:>5}  {faults.failed[kind]:>9}  "
                  f"{blamed[kind]:>23}")  # fmt: skip
        if blamed["(none)"]:
            print(f"missing with no fault in the {BLAME_WINDOW_S:g} s before: {blamed['(none)']}")
        return self._verdict(processes, faults, blamed)

    def _stored_ids(self) -> Counter[tuple[str, int]]:
        """The ids in the primary's query stream, once the primary answers."""

        wait_until(lambda: self._on_primary(redis.Redis.ping), 60.0, "the primary to answer")
        return self._on_primary(lambda client: count_ids(client, PREFIX))

    def _on_primary(self, call: Callable[[redis.Redis], T]) -> T:
        """`call` with a fresh connection to the primary of the moment."""
        client = admin(self.store.primary().port)
        try:
            return call(client)
        finally:
            client.close()

    def _show_missing(self, processes: list[ProcessFigures], ids: Counter[tuple[str, int]]) -> None:
        """The missing runs of each process, with when they were recorded (s into the soak)."""
        for process in processes:
            runs = missing_ranges(process, ids)
            offset_s = process.started_at - self._started_epoch_s
            shown = ", ".join(
                f"{r.start}-{r.stop - 1} ({len(r)}, at {offset_s + r.start / self.options.rate:.1f}"
                f"-{offset_s + r.stop / self.options.rate:.1f} s)"
                for r in runs[:8]
            )
            if runs:
                print(f"{process.node} missing: {shown}{' ...' if len(runs) > 8 else ''}")

    def _missing_times(
        self, processes: list[ProcessFigures], ids: Counter[tuple[str, int]]
    ) -> list[float]:
        """When each missing event was recorded (epoch s)."""
        return [
            p.started_at + seq / self.options.rate
            for p in processes
            for seq in range(p.recorded)
            if (p.node, seq) not in ids
        ]

    def _verdict(
        self, processes: list[ProcessFigures], faults: FaultLog, blamed: Counter[str]
    ) -> dict[str, Any]:
        duplicates = sum(p.duplicates for p in processes)
        unreported = sum(p.unreported for p in processes)
        acked_lost = sum(p.acknowledged_lost for p in processes)
        passed = duplicates == 0 and unreported == 0 and (self.options.acks == 0 or acked_lost == 0)
        print(f"\n{'PASSED' if passed else 'FAILED'}: {duplicates} duplicates, {unreported} "
              f"unreported losses, {acked_lost} acknowledged events lost", flush=True)  # fmt: skip
        return {
            "passed": passed,
            "options": asdict(self.options),
            "processes": [
                {**asdict(p), "unreported": p.unreported, "acknowledged_lost": p.acknowledged_lost}
                for p in processes
            ],
            "faults": dict(faults.injected),
            "faults_not_given": dict(faults.failed),
            "missing_after_fault": dict(blamed),
        }


def blame(missing_s: list[float], faults: FaultLog) -> Counter[str]:
    """Each missing event put down to the last fault that began before it (within a window)."""
    blamed: Counter[str] = Counter()
    for at_s in missing_s:
        before = [(t, kind) for t, kind in faults.given if t <= at_s]
        last = max(before, default=None)
        fits = last is not None and at_s - last[0] <= BLAME_WINDOW_S
        blamed[last[1] if fits and last else "(none)"] += 1
    return blamed
