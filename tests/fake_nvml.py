"""A stand-in for the pynvml module: GPUs described in the test, errors raised on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

GIB = 2**30


class FakeNvmlError(Exception):
    """pynvml.NVMLError."""


class FakeNotSupported(FakeNvmlError):
    """pynvml.NVMLError_NotSupported: a figure this GPU does not give."""


@dataclass
class FakeGpu:
    name: str | bytes
    used_bytes: int
    total_bytes: int
    utilization: int | None = 40  # None: NVML says "not supported"
    temperature_c: int | None = 55
    power_mw: int | None = 120_500


@dataclass
class FakeNvml:
    """Shaped like `workers.gpu.NvmlModule`; no `nvmlMemory_v2`, so the v1 query is used."""

    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: Exception | None = None
    failing_readings: set[int] = field(default_factory=set)  # which readings (1-based) fail
    readings: int = 0
    shutdowns: int = 0

    NVMLError = FakeNvmlError
    NVML_TEMPERATURE_GPU = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if index == 0:
            self.readings += 1
        if self.readings in self.failing_readings:
            raise FakeNvmlError("GPU is lost")
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str | bytes:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu, version: object = None) -> SimpleNamespace:
        free = handle.total_bytes - handle.used_bytes
        return SimpleNamespace(used=handle.used_bytes, total=handle.total_bytes, free=free)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(gpu=_supported(handle.utilization), memory=0)

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return _supported(handle.temperature_c)

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        return _supported(handle.power_mw)


def _supported(value: int | None) -> int:
    if value is None:
        raise FakeNotSupported("Not Supported")
    return value


class FakeNvmlV2(FakeNvml):
    """A driver with the v2 memory query: `used` leaves out what the driver reserves."""

    nvmlMemory_v2 = 0x2000028
    reserved_bytes = GIB // 2

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu, version: object = None) -> SimpleNamespace:
        info = super().nvmlDeviceGetMemoryInfo(handle)
        if version == self.nvmlMemory_v2:
            info.used -= self.reserved_bytes
        return info
