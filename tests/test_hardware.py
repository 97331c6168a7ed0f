"""Host readings: rates from counter deltas, and psutil's source on this machine."""

from __future__ import annotations

import pytest

from workers.hardware import HardwareReading, PsutilSource, RateMeter, Rates, RecordedSource


def reading(at_s: float, read: int, write: int, rx: int, tx: int) -> HardwareReading:
    return HardwareReading(
        monotonic_s=at_s, cpu_percent=12.5, cpu_cores=8,
        memory_used_bytes=4 * 10**9, memory_total_bytes=16 * 10**9,
        disk_read_bytes=read, disk_write_bytes=write, net_rx_bytes=rx, net_tx_bytes=tx,
    )  # fmt: skip


def test_rates_come_from_counter_deltas_over_elapsed_time() -> None:
    meter = RateMeter()
    source = RecordedSource([
        reading(100.0, read=5_000_000, write=1_000_000, rx=10**9, tx=2 * 10**9),
        reading(101.0, read=8_000_000, write=1_500_000, rx=10**9 + 12_500_000, tx=2 * 10**9),
        reading(103.0, read=12_000_000, write=1_500_000, rx=10**9 + 13_500_000, tx=2 * 10**9 + 7),
    ])  # fmt: skip
    first, second, third = (meter.update(source.read()) for _ in range(3))
    assert first == Rates()  # no baseline yet: 0, not a spike of everything since boot
    assert second == Rates(disk_read_mbps=3.0, disk_write_mbps=0.5, net_rx_mbps=12.5)
    assert third == Rates(disk_read_mbps=2.0, net_rx_mbps=0.5, net_tx_mbps=3.5e-6)


def test_a_counter_going_back_gives_zero_not_negative() -> None:
    meter = RateMeter()
    meter.update(reading(0.0, read=900, write=900, rx=900, tx=900))
    assert meter.update(reading(1.0, read=100, write=2_000_900, rx=0, tx=900)) == Rates(
        disk_write_mbps=2.0
    )


def test_no_time_elapsed_gives_zeros() -> None:
    meter = RateMeter()
    meter.update(reading(5.0, 0, 0, 0, 0))
    assert meter.update(reading(5.0, 10**6, 10**6, 10**6, 10**6)) == Rates()


def test_recorded_source_repeats_its_last_reading() -> None:
    last = reading(1.0, 1, 1, 1, 1)
    source = RecordedSource([reading(0.0, 0, 0, 0, 0), last])
    assert [source.read() for _ in range(3)][1:] == [last, last]
    with pytest.raises(ValueError, match="no readings"):
        RecordedSource([]).read()


def test_psutil_source_reads_this_machine() -> None:
    source = PsutilSource()
    first, second = source.read(), source.read()
    assert second.monotonic_s >= first.monotonic_s
    assert first.cpu_cores >= 1
    assert 0.0 <= second.cpu_percent <= 100.0
    assert 0 < second.memory_used_bytes <= second.memory_total_bytes
    assert second.disk_read_bytes >= 0 and second.net_rx_bytes >= 0
