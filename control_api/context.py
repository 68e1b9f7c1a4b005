"""The objects every route reaches through `request.app[...]`, by typed key."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from avatar_runtime import AvatarCatalog, BackgroundLibrary

from .config import Settings
from .jobs.system import JobSystem
from .metrics import ApiMetrics
from .render_service.pool import RenderPool
from .sessions import SessionHub
from .streaming.manager import StreamManager
from .streaming.webrtc import PeerRegistry

SETTINGS = web.AppKey("settings", Settings)
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
HUB = web.AppKey("hub", SessionHub)
METRICS = web.AppKey("metrics", ApiMetrics)
BACKGROUNDS = web.AppKey("backgrounds", BackgroundLibrary)
AVATARS = web.AppKey("avatars", AvatarCatalog)
STARTED_AT = web.AppKey("started_at", float)
JOBS = web.AppKey("jobs", JobSystem)
RENDER_POOL = web.AppKey("render_pool", RenderPool)
STREAMS = web.AppKey("streams", StreamManager)
"""The streaming sessions (seed 004): `get(session_id)` finds a live one (a FrameSource)."""
WEBRTC_PEERS = web.AppKey("webrtc_peers", PeerRegistry)
"""The WebRTC peers playing streaming sessions (WHEP and `webrtc_offer`), with their limits."""
