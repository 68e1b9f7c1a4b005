"""Health, readiness and liveness probes (seed 004's `/api/v1/*`, seed 002's `/health`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

import renderers

from . import gpu
from .context import HTTP_SESSION, HUB, RENDER_POOL, SETTINGS, STARTED_AT
from .errors import ApiError

log = logging.getLogger("control_api")

VERSION = "0.1.0"
PROBE_TIMEOUT_S = 1.0
GPU_INFO = web.AppKey("gpu_info", dict)


async def livekit_reachable(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        async with session.get(url, timeout=timeout, allow_redirects=False):
            return True  # any HTTP answer at all means the server is up
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False


def renderer_report() -> list[dict[str, Any]]:
    report = []
    for name in renderers.available():
        reason = renderers.unavailable_reason(name)
        entry: dict[str, Any] = {"name": name, "available": reason is None}
        if reason is not None:
            entry["reason"] = reason
        entry["emotions"] = list(_renderer_emotions(name))
        details = _renderer_details(name)
        if details:
            entry["details"] = details  # e.g. wav2lip's back end and device
        report.append(entry)
    return report


def _renderer_details(name: str) -> dict[str, Any]:
    try:
        return dict(renderers.renderer_class(name).describe())
    except Exception as error:  # health reports what it can; unavailable_reason says why
        log.debug("renderer %s cannot describe itself: %s", name, error)
        return {}


def _renderer_emotions(name: str) -> tuple[str, ...]:
    """The emotions a renderer can show; empty when it has no emotion control (wav2lip)."""
    try:
        return tuple(renderers.renderer_class(name).capabilities.emotions)
    except Exception:
        return ()


def detect_gpus() -> dict[str, Any]:
    """The GPUs by name, through NVML (control_api/gpu.py, which `GET /api/v1/gpu-info` reads
    too). Blocking: run once, off the event loop."""
    info = gpu.gpu_info()
    names = [device["name"] for device in sorted(info["devices"], key=lambda d: d["index"])]
    return {"available": bool(names), "devices": names, "source": info["source"]}


async def gpu_probe(app: web.Application) -> Any:
    info = app[GPU_INFO] = {"available": False, "devices": [], "source": "pending"}

    async def probe() -> None:
        info.update(await asyncio.to_thread(detect_gpus))  # in place: the app is frozen by now

    task = asyncio.create_task(probe(), name="gpu-probe")
    yield
    task.cancel()


async def _report(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    reachable, report = await asyncio.gather(
        livekit_reachable(request.app[HTTP_SESSION], settings.livekit_http_url),
        asyncio.to_thread(renderer_report),
    )
    gpu = request.app[GPU_INFO]
    healthy = reachable and any(r["available"] for r in report)
    render = request.app[RENDER_POOL].status()
    return {
        "status": "ok" if healthy else "degraded",
        "ready": render["ready"],
        "version": VERSION,
        "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 1),
        "livekit": {"url": settings.livekit_url, "reachable": reachable},
        "renderers": report,
        "gpuAvailable": gpu["available"],
        "gpu": {"available": gpu["available"], "devices": gpu["devices"]},
        "sessions": len(request.app[HUB]),
        "render": render,
    }


async def health(request: web.Request) -> web.Response:
    return web.json_response(await _report(request))


async def ready(request: web.Request) -> web.Response:
    report = await _report(request)
    problems = []
    if not report["livekit"]["reachable"]:
        problems.append(f"LiveKit is unreachable at {report['livekit']['url']}")
    if not any(r["available"] for r in report["renderers"]):
        problems.append("no renderer can load (see /health)")
    if problems:
        raise ApiError(503, "not_ready", "; ".join(problems))
    return web.json_response({"ready": True})


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})
