"""The NVML source: sums and per-GPU figures, NVML errors mid-run, and no NVML at all."""

from __future__ import annotations

import logging
import sys

import pytest

from metrics_store.live.snapshots import StoredGpu
from tests.fake_nvml import GIB, FakeGpu, FakeNvml, FakeNvmlError, FakeNvmlV2
from workers.gpu import NO_GPUS, NvmlSource


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu("NVIDIA H100 80GB HBM3", used_bytes=20 * GIB, total_bytes=80 * GIB),
        FakeGpu(b"NVIDIA A10", used_bytes=6 * GIB, total_bytes=24 * GIB, utilization=None,
                temperature_c=61, power_mw=None),
    ]  # fmt: skip


def test_vram_is_summed_and_each_gpu_listed() -> None:
    reading = NvmlSource(FakeNvml(two_gpus())).read()
    assert reading.vram_used_bytes == 26 * GIB
    assert reading.vram_total_bytes == 104 * GIB
    assert reading.gpus == (
        StoredGpu(index=0, name="NVIDIA H100 80GB HBM3", memory_used_bytes=20 * GIB,
                  memory_total_bytes=80 * GIB, utilization_percent=40.0, temperature_c=55.0,
                  power_w=120.5),
        # Figures NVML does not support on a device are None; the rest still come through.
        StoredGpu(index=1, name="NVIDIA A10", memory_used_bytes=6 * GIB,
                  memory_total_bytes=24 * GIB, utilization_percent=None, temperature_c=61.0,
                  power_w=None),
    )  # fmt: skip


def test_v2_memory_query_leaves_reserved_memory_out() -> None:
    nvml = FakeNvmlV2([FakeGpu("GPU", used_bytes=4 * GIB, total_bytes=16 * GIB)])
    reading = NvmlSource(nvml).read()
    assert reading.vram_used_bytes == 4 * GIB - nvml.reserved_bytes
    assert reading.gpus[0].memory_used_bytes == 4 * GIB - nvml.reserved_bytes


def test_an_nvml_error_skips_that_reading_only(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(two_gpus(), failing_readings={2})
    source = NvmlSource(nvml)
    first = source.read()
    nvml.gpus[0].used_bytes = 30 * GIB
    with caplog.at_level(logging.INFO, logger="workers.gpu"):
        held = source.read()  # fails: the last good reading stands in
        fresh = source.read()
    assert held == first
    assert fresh.vram_used_bytes == 36 * GIB
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]  # failed, then back


def test_a_gpu_that_stays_unreadable_drops_to_zeros(caplog: pytest.LogCaptureFixture) -> None:
    failing = set(range(2, 100))
    source = NvmlSource(FakeNvml(two_gpus(), failing_readings=failing))
    good = source.read()
    with caplog.at_level(logging.WARNING, logger="workers.gpu"):
        readings = [source.read() for _ in range(NvmlSource.HOLD_READINGS + 2)]
    assert readings[: NvmlSource.HOLD_READINGS] == [good] * NvmlSource.HOLD_READINGS
    assert readings[NvmlSource.HOLD_READINGS :] == [NO_GPUS, NO_GPUS]
    assert len(caplog.records) == 1  # logged once, not once a second


def test_no_pynvml_module_reports_zeros_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    source = NvmlSource()
    with caplog.at_level(logging.INFO, logger="workers.gpu"):
        readings = [source.read() for _ in range(3)]
    source.close()
    assert readings == [NO_GPUS] * 3
    assert len(caplog.records) == 1
    assert "no NVML library" in caplog.records[0].getMessage()


def test_no_driver_reports_zeros_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(init_error=FakeNvmlError("NVML Shared Library Not Found"))
    source = NvmlSource(nvml)
    with caplog.at_level(logging.INFO, logger="workers.gpu"):
        assert [source.read(), source.read()] == [NO_GPUS, NO_GPUS]
    assert len(caplog.records) == 1


def test_no_gpu_reports_zeros_and_releases_nvml(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml(gpus=[])
    source = NvmlSource(nvml)
    with caplog.at_level(logging.INFO, logger="workers.gpu"):
        assert [source.read(), source.read()] == [NO_GPUS, NO_GPUS]
    assert len(caplog.records) == 1
    assert nvml.shutdowns == 1


def test_close_shuts_nvml_down() -> None:
    nvml = FakeNvml(two_gpus())
    source = NvmlSource(nvml)
    source.read()
    source.close()
    assert nvml.shutdowns == 1


def test_real_nvml_never_raises() -> None:
    """On this machine, whatever it has (no library, no driver, GPUs): a consistent reading."""
    source = NvmlSource()
    reading = source.read()
    source.close()
    assert reading.vram_used_bytes <= reading.vram_total_bytes
    assert len(reading.gpus) == 0 or reading.vram_total_bytes > 0
