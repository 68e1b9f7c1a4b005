"""What this server can run and on what (seed 004's `GET /api/v1/models` and
`GET /api/v1/gpu-info`).

`/api/v1/models`: every renderer, whether it can load here or why not (as `/health` says), the
model files it found or misses (`Renderer.checkpoints`), the back end and device it would run
on, the emotions it shows, and which renderer is the default; then the inference back ends
installed here (torch, ONNX Runtime, TensorRT) and the devices (the CPU, each GPU).
`/api/v1/gpu-info`: the GPUs through NVML (gpu.py); without any, 200 with the reason.

Paths are those the operator configured (AVATAR_LIVEPORTRAIT_DIR, ...), files named from there;
the server's home folder is shown as `~`. Both routes need a key, like /api/v1/ready.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

import renderers
from renderers.model_settings import installed

from . import gpu
from .config import Settings
from .context import SETTINGS
from .health import renderer_report

log = logging.getLogger("control_api")

BACKEND_PACKAGES = {"torch": "torch", "onnx": "onnxruntime", "tensorrt": "tensorrt"}
"""Our back ends' names and the module each needs."""
BACKEND_EXTRA = "pip install 'avatar-agents[wav2lip]'"


def defaults(settings: Settings) -> dict[str, str]:
    """The default renderer of each service that picks one."""
    chosen = {"render_service": settings.render_service_renderer}
    stream = getattr(settings, "stream_renderer", None)
    if stream:
        chosen["stream"] = stream
    return chosen


def models_report(settings: Settings, gpus: dict[str, Any]) -> dict[str, Any]:
    """The body of GET /api/v1/models. Blocking (it looks at files): off the event loop."""
    chosen = defaults(settings)
    default = chosen.get("stream", settings.render_service_renderer)
    models = []
    for entry in renderer_report():
        name = entry["name"]
        details = entry.pop("details", {})
        model: dict[str, Any] = {
            "name": name,
            "default": name == default,
            "default_for": [service for service, renderer in chosen.items() if renderer == name],
            **entry,
        }
        try:
            cls = renderers.renderer_class(name)
        except Exception as error:  # cannot import: `reason` says why
            log.debug("renderer %s cannot be inspected: %s", name, error)
            model.update(checkpoints=None, devices=[], backends=[], details=details)
            models.append(model)
            continue
        capabilities = cls.capabilities
        model["backends"] = list(capabilities.backends)
        model["backend"] = details.get("backend", capabilities.backends[0])
        model["devices"] = list(capabilities.devices)
        model["device"] = details.get("device", "cpu")
        model["needs_source"] = capabilities.needs_source
        model["native_fps"] = capabilities.native_fps
        model["checkpoints"] = _checkpoints(cls)
        model["details"] = details
        models.append(model)
    return _tilde(
        {
            "default": default,
            "defaults": chosen,
            "models": models,
            "backends": backends_report(bool(gpus.get("available"))),
            "devices": devices_report(gpus),
        }
    )


def _checkpoints(cls: type[renderers.Renderer]) -> dict[str, object] | None:
    try:
        return cls.checkpoints()
    except Exception as error:  # a report, not a load: say nothing rather than fail
        log.debug("renderer %s cannot list its files: %s", cls.name, error)
        return None


def backends_report(gpu_present: bool) -> list[dict[str, Any]]:
    """Each inference back end: installed (importable, not imported), its version, and
    whether it can run here."""
    report = []
    for name, module in BACKEND_PACKAGES.items():
        present = installed(module)
        entry: dict[str, Any] = {
            "name": name,
            "module": module,
            "installed": present,
            "version": _version(module) if present else None,
        }
        reason = None
        if not present:
            reason = f"the '{module}' package is not installed"
            if name != "tensorrt":
                reason += f" ({BACKEND_EXTRA})"
        elif name == "tensorrt" and not gpu_present:
            reason = "TensorRT needs an NVIDIA GPU, and none was found"
        entry["usable"] = reason is None
        if reason is not None:
            entry["reason"] = reason
        report.append(entry)
    return report


def devices_report(gpus: dict[str, Any]) -> list[dict[str, Any]]:
    """The CPU, then each GPU NVML sees (by nvidia-smi's index; the selected one first)."""
    devices: list[dict[str, Any]] = [{"id": "cpu", "type": "cpu", "available": True}]
    for device in gpus.get("devices", []):
        devices.append(
            {
                "id": f"cuda:{device['index']}",
                "type": "cuda",
                "available": True,
                "name": device["name"],
                "selected": bool(device.get("selected")),
            }
        )
    return devices


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _version(module: str) -> str | None:
    """The installed version of the distribution that provides `module` (onnxruntime or
    onnxruntime-gpu, ...), read from its metadata without importing it."""
    for distribution in _distributions().get(module, [module]):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _tilde(value: Any) -> Any:
    """`value` with the server's home folder shown as `~` in every string."""
    home = str(Path.home())
    if len(home) <= 1:
        return value
    if isinstance(value, str):
        return value.replace(home, "~")
    if isinstance(value, dict):
        return {key: _tilde(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tilde(item) for item in value]
    return value


# --- handlers -------------------------------------------------------------------------------


async def models(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    gpus = await asyncio.to_thread(_safe_gpu_info, settings.gpu_id)
    body = await asyncio.to_thread(models_report, settings, gpus)
    return web.json_response(body)


async def gpu_info(request: web.Request) -> web.Response:
    """Always 200: the GPUs, or `available: false` with the reason."""
    info = await asyncio.to_thread(_safe_gpu_info, request.app[SETTINGS].gpu_id)
    return web.json_response(info)


def _safe_gpu_info(gpu_id: int | None) -> dict[str, Any]:
    try:
        return gpu.gpu_info(gpu_id)
    except Exception as error:  # gpu_info catches NVML's errors; anything else is still no 5xx
        log.warning("GPU query failed", exc_info=True)
        return {
            "available": False,
            "reason": f"the GPU query failed: {type(error).__name__}",
            "source": "nvml",
            "devices": [],
        }
