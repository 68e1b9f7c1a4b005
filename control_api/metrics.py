"""Prometheus metrics: the API's own requests, plus the sessions' frame rates and render times
as their avatars report them (the `avatar.stats` participant attribute), the offline jobs, the
single-frame render service (seed 001's `liveportrait_*` names, for every renderer) and the
frame-streaming sessions (seed 004's WebSocket, `avatar_stream_*`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import ERROR_CODE

disable_created_metrics()  # the `_created` twin of every series is noise here

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The per-session gauges: metric name suffix -> (key in avatar.stats, help).
SESSION_GAUGES: Mapping[str, tuple[str, str]] = {
    "delivered_fps": ("actual_fps", "Frames per second the avatar publishes"),
    "render_ms_p50": ("render_ms_p50", "Median render time per frame, in milliseconds"),
    "render_ms_p95": ("render_ms_p95", "95th percentile render time per frame, in milliseconds"),
    "first_frame_latency_ms": (
        "first_frame_latency_ms",
        "Last utterance: first audio in to first frame out, in milliseconds",
    ),
    "repeated_frames": ("repeated_frames", "Frames shown again because a render was late"),
}

SessionStats = Callable[[], Iterable[tuple[str, Mapping[str, Any]]]]
"""Yields (session_id, the avatar's latest stats) for every live session."""


class _SessionCollector(Collector):
    def __init__(self, sessions: SessionStats) -> None:
        self._sessions = sessions

    def collect(self) -> Iterable[GaugeMetricFamily]:
        snapshot = list(self._sessions())
        active = GaugeMetricFamily("avatar_sessions_active", "Live avatar sessions")
        active.add_metric([], len(snapshot))
        yield active
        for suffix, (key, help_text) in SESSION_GAUGES.items():
            family = GaugeMetricFamily(f"avatar_session_{suffix}", help_text, labels=["session_id"])
            for session_id, stats in snapshot:
                value = stats.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    family.add_metric([session_id], float(value))
            yield family


JobCounts = Callable[[], Mapping[str, Mapping[str, int]]]
"""{kind: {status: number of jobs}} (control_api.jobs.store.JobStore.counts)."""
_JOB_DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class _JobCollector(Collector):
    def __init__(self, counts: JobCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = self._counts()
        jobs = GaugeMetricFamily(
            "avatar_jobs", "Offline jobs by kind and status", labels=["kind", "status"]
        )
        depth = GaugeMetricFamily("avatar_jobs_queue_depth", "Jobs waiting to run", labels=["kind"])
        for kind, by_status in counts.items():
            for status, number in by_status.items():
                jobs.add_metric([kind, status], number)
            depth.add_metric([kind], by_status.get("pending", 0))
        yield jobs
        yield depth


RenderPoolStatus = Callable[[], Mapping[str, Any]]
"""The render pool's status (control_api.render_service.pool.RenderPool.status)."""
_RENDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _RenderPoolCollector(Collector):
    def __init__(self, status: RenderPoolStatus) -> None:
        self._status = status

    def collect(self) -> Iterable[GaugeMetricFamily]:
        status = self._status()
        for name, key, help_text in (
            ("avatar_render_workers_up", "workersUp", "Render service workers running"),
            ("avatar_render_workers_busy", "busy", "Render service workers rendering"),
            ("avatar_render_queue_depth", "queued", "Render requests waiting for a worker"),
        ):
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], float(status.get(key, 0)))
            yield family
        ready = GaugeMetricFamily("avatar_render_ready", "1 once the render service is warm")
        ready.add_metric([], 1.0 if status.get("ready") else 0.0)
        yield ready


StreamStats = Callable[[], Mapping[str, Any]]
"""The frame-streaming totals (control_api.streaming.manager.StreamManager.stats)."""

# Seed 004's streaming sessions: metric name -> (key in StreamManager.stats(), help, counter?).
STREAM_METRICS: Mapping[str, tuple[str, str, bool]] = {
    "avatar_stream_sessions_active": ("sessions_active", "Streaming sessions live now", False),
    "avatar_stream_sessions_max": ("max_sessions", "Streaming sessions allowed at once", False),
    "avatar_stream_fps": ("fps", "Frames per second all streaming sessions render now", False),
    "avatar_stream_frames": ("frames", "Frames rendered by streaming sessions", True),
    "avatar_stream_frames_dropped": (
        "dropped",
        "Frames a streaming client lost by reading too slowly",
        True,
    ),
}
STREAM_OUTCOMES = (
    "started",
    "completed",
    "refused",
    "expired",
    "crashed",
    "failed",
    "disconnected",
)


class _StreamCollector(Collector):
    def __init__(self, stats: StreamStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats()
        for name, (key, help_text, counter) in STREAM_METRICS.items():
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            family = kind(name, help_text)
            family.add_metric([], float(stats.get(key, 0)))
            yield family
        sessions = CounterMetricFamily(
            "avatar_stream_sessions", "Streaming sessions by how they went", labels=["outcome"]
        )
        for outcome in STREAM_OUTCOMES:
            sessions.add_metric([outcome], float(stats.get(f"sessions_{outcome}", 0)))
        yield sessions


class ApiMetrics:
    def __init__(self, sessions: SessionStats) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "avatar_api_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "avatar_api_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "avatar_api_errors", "Error responses by code", ["code"], registry=self.registry
        )
        self.sessions_created = Counter(
            "avatar_sessions_created", "Sessions created", registry=self.registry
        )
        self.registry.register(_SessionCollector(sessions))
        self.job_duration = Histogram(
            "avatar_job_duration_seconds",
            "Offline jobs: first start to end (retries included), by kind and final status",
            ["kind", "status"],
            buckets=_JOB_DURATION_BUCKETS,
            registry=self.registry,
        )

        # Seed 001's names, for whichever renderer serves (labelled by it).
        self.render_requests = Counter(
            "liveportrait_requests",
            "Single-frame and batch render requests answered, by renderer and endpoint",
            ["renderer", "endpoint"],
            registry=self.registry,
        )
        self.render_duration = Histogram(
            "liveportrait_request_duration_seconds",
            "Time to answer a render request (its body read), by renderer and endpoint",
            ["renderer", "endpoint"],
            buckets=_RENDER_BUCKETS,
            registry=self.registry,
        )
        self.render_errors = Counter(
            "liveportrait_errors",
            "Render requests refused or failed, by renderer and error code",
            ["renderer", "code"],
            registry=self.registry,
        )
        self.portraits = Counter(
            "avatar_render_portraits",
            "Portraits of render requests: analysed, or found in a worker's cache",
            ["renderer", "cache"],
            registry=self.registry,
        )

    def watch_jobs(self, counts: JobCounts) -> None:
        """Report job counts and queue depth from `counts` at every scrape."""
        self.registry.register(_JobCollector(counts))

    def job_finished(self, kind: str, status: str, seconds: float | None) -> None:
        if seconds is not None:
            self.job_duration.labels(kind, status).observe(max(0.0, seconds))

    def watch_render_pool(self, status: RenderPoolStatus) -> None:
        """Report the render workers and their queue from `status` at every scrape."""
        self.registry.register(_RenderPoolCollector(status))

    def watch_streams(self, stats: StreamStats) -> None:
        """Report the frame-streaming sessions from `stats` at every scrape."""
        self.registry.register(_StreamCollector(stats))

    def render_done(self, renderer: str, endpoint: str, seconds: float) -> None:
        self.render_requests.labels(renderer, endpoint).inc()
        self.render_duration.labels(renderer, endpoint).observe(max(0.0, seconds))

    def render_failed(self, renderer: str, endpoint: str, code: str, seconds: float) -> None:
        self.render_done(renderer, endpoint, seconds)
        self.render_errors.labels(renderer, code).inc()

    def portrait(self, renderer: str, analysed: bool) -> None:
        self.portraits.labels(renderer, "miss" if analysed else "hit").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self) -> Middleware:
        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            start = time.perf_counter()
            response = await handler(request)
            route = _route_name(request)
            if not isinstance(response, web.WebSocketResponse):  # its duration is the session's
                self.duration.labels(request.method, route).observe(time.perf_counter() - start)
            self.requests.labels(request.method, route, str(response.status)).inc()
            code = response.get(ERROR_CODE)
            if code:
                self.errors.labels(code).inc()
            return response

        return measure


def _route_name(request: web.Request) -> str:
    """The route's pattern, so labels stay few: `/avatars/{session_id}`, not one per id."""
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical
