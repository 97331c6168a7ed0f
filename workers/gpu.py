"""GPU readings through NVML, given as a module object so tests can hand in a fake one.

NVML is optional. With no `pynvml` module, no NVIDIA driver or no GPU the source reports zeros
and an empty list, says so once in the log, and never tries again. An NVML error in one reading
skips that reading: the last good one stands in for a few samples, then zeros; the sampler
never stops for NVML.

    source = NvmlSource()            # pynvml, imported on first use
    source = NvmlSource(fake_nvml)   # anything shaped like `NvmlModule`
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from metrics_store.live.snapshots import StoredGpu

log = logging.getLogger(__name__)


class NvmlModule(Protocol):
    """The part of pynvml (nvidia-ml-py) the sampler uses."""

    NVMLError: type[Exception]
    NVML_TEMPERATURE_GPU: int

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...


@dataclass(frozen=True)
class GpuReading:
    """Every GPU of the node: memory summed in bytes, and each device's own figures."""

    vram_used_bytes: int = 0
    vram_total_bytes: int = 0
    gpus: tuple[StoredGpu, ...] = ()


NO_GPUS = GpuReading()


class GpuSource(Protocol):
    def read(self) -> GpuReading:
        """The GPUs now; zeros where there are none. Never raises for NVML trouble."""
        ...

    def close(self) -> None: ...


class NvmlSource:
    """All GPUs of this machine through NVML."""

    # How many failed readings in a row the last good one stands in for: one hiccup should
    # not draw a drop to zero on the charts, a GPU that stays unreadable should.
    HOLD_READINGS = 3

    def __init__(self, nvml: NvmlModule | None = None) -> None:
        self._nvml = nvml
        self._state = "new"  # new -> ready | off
        self._last_good = NO_GPUS
        self._failures = 0

    def read(self) -> GpuReading:
        nvml = self._ready()
        if nvml is None:
            return NO_GPUS
        try:
            reading = _read_all(nvml)
        except nvml.NVMLError as exc:
            return self._skip(exc)
        if self._failures:
            log.info("NVML readings are back after %d failed", self._failures)
            self._failures = 0
        self._last_good = reading
        return reading

    def close(self) -> None:
        if self._state == "ready" and self._nvml is not None:
            _shutdown(self._nvml)
        self._state = "off"

    def _ready(self) -> NvmlModule | None:
        """NVML, initialised on first use; None (logged once) where there is none to use."""
        if self._state == "new":
            self._state = "off"
            self._nvml = self._nvml or _import_pynvml()
            if self._nvml is not None and _start(self._nvml):
                self._state = "ready"
        return self._nvml if self._state == "ready" else None

    def _skip(self, exc: Exception) -> GpuReading:
        self._failures += 1
        if self._failures == 1:
            log.warning("NVML reading failed (%s); skipping it, the sampler goes on", exc)
        return self._last_good if self._failures <= self.HOLD_READINGS else NO_GPUS


def _import_pynvml() -> NvmlModule | None:
    try:
        module: NvmlModule = importlib.import_module("pynvml")
    except ImportError:
        log.info("no NVML library (pip install nvidia-ml-py): reporting no GPU")
        return None
    return module


def _start(nvml: NvmlModule) -> bool:
    """Initialise NVML; False (logged once) without a driver or without a GPU."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.info("NVML unavailable (%s): reporting no GPU", exc)
        return False
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError as exc:
        count, reason = 0, str(exc)
    else:
        reason = "no GPU found"
    if count > 0:
        return True
    log.info("NVML: %s; reporting no GPU", reason)
    _shutdown(nvml)
    return False


def _shutdown(nvml: NvmlModule) -> None:
    with contextlib.suppress(nvml.NVMLError):  # releasing anyway; nothing to do about it
        nvml.nvmlShutdown()


def _read_all(nvml: NvmlModule) -> GpuReading:
    used = total = 0
    gpus = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        used_bytes, total_bytes = _memory(nvml, handle)
        used += used_bytes
        total += total_bytes
        gpus.append(_status(nvml, handle, index, used_bytes, total_bytes))
    return GpuReading(vram_used_bytes=used, vram_total_bytes=total, gpus=tuple(gpus))


def _memory(nvml: NvmlModule, handle: Any) -> tuple[int, int]:
    # The v2 query leaves driver-reserved memory out of `used`, as nvidia-smi does; the v1
    # query (older drivers, fakes) counts it as used.
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            return int(info.used), int(info.total)
        except nvml.NVMLError:
            pass
    info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return int(info.used), int(info.total)


def _status(nvml: NvmlModule, handle: Any, index: int, used: int, total: int) -> StoredGpu:
    name = nvml.nvmlDeviceGetName(handle)
    return StoredGpu(
        index=index,
        name=name.decode(errors="replace") if isinstance(name, bytes) else str(name),
        memory_used_bytes=used,
        memory_total_bytes=total,
        utilization_percent=_optional(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        temperature_c=_optional(
            nvml, lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        ),
        power_w=_optional(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000),
    )


def _optional(nvml: NvmlModule, read: Callable[[], float]) -> float | None:
    """A figure some GPUs do not give (NVML_ERROR_NOT_SUPPORTED): None rather than a failure."""
    try:
        return round(float(read()), 2)
    except nvml.NVMLError:
        return None
