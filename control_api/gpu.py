"""The GPUs of this machine, through NVML (the NVIDIA driver's management library, by the
`nvidia-ml-py` package): the one place the control API detects GPUs. `/health` reports their
names (probed once at start-up), `GET /api/v1/gpu-info` their memory, load and temperature.

NVML sees every GPU of the machine by its nvidia-smi index, whatever CUDA_VISIBLE_DEVICES
says. `AVATAR_GPU_ID` (seed 004's `DITTO_GPU_ID`) picks the GPU the services use: it is
reported first, and the worker processes are started with only it visible (`select_gpu`).

Nothing here raises: without a driver, or without the package, the answer is
`{"available": False, "reason": ...}`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

log = logging.getLogger("control_api")

T = TypeVar("T")
MIB = 1024 * 1024
_NVML_LOCK = threading.Lock()
"""One NVML session at a time: init and shutdown are counted by the library, but a shutdown
racing another thread's queries would end them."""


def gpu_info(gpu_id: int | None = None) -> dict[str, Any]:
    """Every GPU NVML sees, `gpu_id`'s first, with the driver's and CUDA's versions; or
    `{"available": False, "reason": ...}`. Blocking (a few ms with a GPU): call it off the
    event loop."""
    try:
        import pynvml
    except ImportError:
        return _none("the nvidia-ml-py package (NVML's Python bindings) is not installed")
    with _NVML_LOCK:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            return _none(_init_failure(pynvml, error))
        except OSError as error:  # a library that exists but cannot load
            return _none(f"NVML could not be loaded: {error}")
        try:
            return _query(pynvml, gpu_id)
        except pynvml.NVMLError as error:
            log.warning("NVML query failed: %s", error)
            return _none(f"NVML could not list the GPUs: {error}")
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


def gpu_names() -> list[str]:
    """The GPUs' names in NVML's (nvidia-smi's) order; empty without any."""
    info = gpu_info()
    return [device["name"] for device in sorted(info["devices"], key=lambda d: d["index"])]


def select_gpu(env: MutableMapping[str, str], gpu_id: int | None) -> None:
    """Make `gpu_id` the one GPU a process started with `env` sees (as cuda:0), numbered as
    nvidia-smi and NVML number them; nothing when no id is set or the operator already chose
    with CUDA_VISIBLE_DEVICES."""
    if gpu_id is None or env.get("CUDA_VISIBLE_DEVICES"):
        return
    env["CUDA_VISIBLE_DEVICES"] = str(gpu_id)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def _none(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason, "source": "nvml", "devices": []}


def _init_failure(pynvml: Any, error: Any) -> str:
    value = getattr(error, "value", None)
    if value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return "no NVIDIA driver: the NVML library (libnvidia-ml) was not found"
    if value == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return "the NVIDIA driver is installed but not loaded"
    if value == pynvml.NVML_ERROR_NO_PERMISSION:
        return "no permission to open the NVIDIA devices"
    return f"NVML could not start: {error}"


def _query(pynvml: Any, gpu_id: int | None) -> dict[str, Any]:
    count = int(pynvml.nvmlDeviceGetCount())
    if count == 0:
        return _none("the NVIDIA driver is loaded but reports no GPU")
    devices = [_device(pynvml, index) for index in range(count)]
    info: dict[str, Any] = {
        "available": True,
        "source": "nvml",
        "count": count,
        "driver_version": _optional(pynvml, lambda: _text(pynvml.nvmlSystemGetDriverVersion())),
        "cuda_version": _optional(pynvml, lambda: _cuda_version(pynvml)),
        "nvml_version": _optional(pynvml, lambda: _text(pynvml.nvmlSystemGetNVMLVersion())),
        "selected": None,
        "devices": devices,
    }
    if gpu_id is not None:
        if gpu_id < count:
            info["selected"] = gpu_id
            # sort is stable: the others keep their order
            devices.sort(key=lambda device: device["index"] != gpu_id)
        else:
            info["warning"] = (
                f"AVATAR_GPU_ID={gpu_id} names no GPU: this machine has {count} (0 to {count - 1})"
            )
    for device in devices:
        device["selected"] = device["index"] == info["selected"]
    return info


def _device(pynvml: Any, index: int) -> dict[str, Any]:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = _optional(pynvml, lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    rates = _optional(pynvml, lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
    power = _optional(pynvml, lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    limit = _optional(pynvml, lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    return {
        "index": index,
        "name": _optional(pynvml, lambda: _text(pynvml.nvmlDeviceGetName(handle))) or "unknown",
        "uuid": _optional(pynvml, lambda: _text(pynvml.nvmlDeviceGetUUID(handle))),
        "memory": None
        if memory is None
        else {
            "total_mb": round(memory.total / MIB),
            "used_mb": round(memory.used / MIB),
            "free_mb": round(memory.free / MIB),
            "total_bytes": int(memory.total),
            "used_bytes": int(memory.used),
            "free_bytes": int(memory.free),
        },
        "utilization": None
        if rates is None
        else {"gpu_percent": int(rates.gpu), "memory_percent": int(rates.memory)},
        "temperature_c": _optional(
            pynvml,
            lambda: int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
        ),
        "power_w": None if power is None else round(power / 1000, 1),
        "power_limit_w": None if limit is None else round(limit / 1000, 1),
    }


def _optional(pynvml: Any, read: Callable[[], T]) -> T | None:
    """`read()`, or None where this GPU or driver does not support it (MIG, vGPU, old drivers)."""
    try:
        return read()
    except pynvml.NVMLError:
        return None
    except AttributeError:  # an older nvidia-ml-py without that function
        return None


def _cuda_version(pynvml: Any) -> str:
    """The newest CUDA the driver supports, as nvidia-smi shows it (12040 -> '12.4')."""
    version = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
    return f"{version // 1000}.{version % 1000 // 10}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
