"""The host's own readings (CPU, memory, disk and network counters) behind an injectable source.

As prometheus client_python's process collector takes its `/proc` from the caller, the sampler
takes a `HardwareSource`: `PsutilSource` reads the machine, `RecordedSource` replays readings
written down beforehand, so tests get exact rates without a machine doing anything.

    source = PsutilSource()
    meter = RateMeter()
    rates = meter.update(source.read())   # the first call reports zeros, not a spike
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import psutil

MB = 1_000_000  # MB/s in the API means 10^6 bytes per second


@dataclass(frozen=True)
class HardwareReading:
    """One reading of the host. Byte counters are running totals since boot."""

    monotonic_s: float  # when it was read, on a clock that never jumps (rates divide by it)
    cpu_percent: float  # busy percent since the previous reading (0-100)
    cpu_cores: int
    memory_used_bytes: int
    memory_total_bytes: int
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0


class HardwareSource(Protocol):
    def read(self) -> HardwareReading:
        """The host as it is now; never blocks for a measuring interval."""
        ...


class PsutilSource:
    """The local machine, through psutil."""

    def __init__(self) -> None:
        # cpu_percent(interval=None) compares with the previous call; this first call sets
        # the baseline (and returns a meaningless 0.0), so the first sample covers the gap
        # since construction instead of blocking for an interval.
        psutil.cpu_percent(interval=None)
        self._cores = psutil.cpu_count(logical=True) or 1

    def read(self) -> HardwareReading:
        memory = psutil.virtual_memory()
        disk = psutil.disk_io_counters()  # None on hosts without block devices
        rx, tx = _network_bytes()
        return HardwareReading(
            monotonic_s=time.monotonic(),
            cpu_percent=psutil.cpu_percent(interval=None),
            cpu_cores=self._cores,
            # total - available, so that used / total is psutil's own `percent`.
            memory_used_bytes=memory.total - memory.available,
            memory_total_bytes=memory.total,
            disk_read_bytes=disk.read_bytes if disk else 0,
            disk_write_bytes=disk.write_bytes if disk else 0,
            net_rx_bytes=rx,
            net_tx_bytes=tx,
        )


def _network_bytes() -> tuple[int, int]:
    """Bytes received and sent over every interface but loopback.

    Loopback is left out: the store's own Redis traffic on 127.0.0.1 is not network throughput.
    """
    counters = psutil.net_io_counters(pernic=True)
    real = [c for name, c in counters.items() if not name.startswith("lo")]
    return sum(c.bytes_recv for c in real), sum(c.bytes_sent for c in real)


class RecordedSource:
    """Replays readings in order, then repeats the last one; for tests and replays.

    >>> source = RecordedSource([reading_at_0s, reading_at_1s])
    """

    def __init__(self, readings: Iterable[HardwareReading]) -> None:
        self._readings: Iterator[HardwareReading] = iter(readings)
        self._last: HardwareReading | None = None

    def read(self) -> HardwareReading:
        self._last = next(self._readings, self._last)
        if self._last is None:
            raise ValueError("RecordedSource was given no readings")
        return self._last


@dataclass(frozen=True)
class Rates:
    """MB/s between two readings."""

    disk_read_mbps: float = 0.0
    disk_write_mbps: float = 0.0
    net_rx_mbps: float = 0.0
    net_tx_mbps: float = 0.0


class RateMeter:
    """Turns running byte counters into MB/s between consecutive readings."""

    def __init__(self) -> None:
        self._previous: HardwareReading | None = None

    def update(self, reading: HardwareReading) -> Rates:
        """Rates since the previous reading; zeros for the first one (no baseline yet)."""
        previous, self._previous = self._previous, reading
        if previous is None:
            return Rates()
        elapsed_s = reading.monotonic_s - previous.monotonic_s
        if elapsed_s <= 0:
            return Rates()

        def rate(now: int, before: int) -> float:
            # A counter that went back (an interface removed, a reset) gives 0, not a negative.
            return max(0, now - before) / MB / elapsed_s

        return Rates(
            disk_read_mbps=rate(reading.disk_read_bytes, previous.disk_read_bytes),
            disk_write_mbps=rate(reading.disk_write_bytes, previous.disk_write_bytes),
            net_rx_mbps=rate(reading.net_rx_bytes, previous.net_rx_bytes),
            net_tx_mbps=rate(reading.net_tx_bytes, previous.net_tx_bytes),
        )
