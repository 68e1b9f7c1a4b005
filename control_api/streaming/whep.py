"""WHEP (WebRTC-HTTP Egress Protocol, RFC 9725) for streaming sessions: a player POSTs its SDP
offer and gets the answer, then plays the session's frames and audio as WebRTC media
(webrtc.py); DELETE on the answer's Location ends it.

    POST   /api/v1/stream/sessions/{session_id}/whep            application/sdp -> 201
    DELETE /api/v1/stream/sessions/{session_id}/whep/{peer_id}                  -> 200

No trickle ICE and no ICE restarts (aiortc has neither): the answer carries every candidate,
so a PATCH is answered 405. Credentials as on every route (X-API-Key or Authorization:
Bearer, which a WHEP player sends).
"""

from __future__ import annotations

from aiohttp import hdrs, web

from .. import openapi as spec
from ..config import Settings
from ..context import STREAMS, WEBRTC_PEERS
from ..errors import ApiError, not_found
from ..openapi import Route
from ..validation import read_body
from .webrtc import PeerRegistry, ice_servers

SDP = "application/sdp"
WHEP_PATH = "/api/v1/stream/sessions/{session_id}/whep"


def peer_registry(settings: Settings) -> PeerRegistry:
    """The service's WebRTC peers, limited and configured by `settings`."""
    return PeerRegistry(
        max_per_session=settings.webrtc_max_peers_per_session,
        max_total=settings.webrtc_max_peers,
        ice_servers=ice_servers(
            settings.webrtc_ice_servers,
            settings.webrtc_ice_username,
            settings.webrtc_ice_credential,
        ),
    )


async def close_peers(app: web.Application) -> None:
    """on_shutdown: close every peer (their clients see the connection end)."""
    await app[WEBRTC_PEERS].aclose()


async def whep_offer(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    source = request.app[STREAMS].get(session_id)
    if source is None:
        raise not_found("streaming session", session_id, code="session_not_found")
    if request.content_type != SDP:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the SDP offer as {SDP}, not {request.content_type[:100]!r}",
        )
    raw = await read_body(request)
    try:
        offer = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_sdp", "the offer is not UTF-8 text") from None
    peer = await request.app[WEBRTC_PEERS].answer(source, offer)
    return web.Response(
        status=201,
        body=peer.answer.encode(),
        headers={
            hdrs.CONTENT_TYPE: SDP,
            hdrs.LOCATION: f"/api/v1/stream/sessions/{session_id}/whep/{peer.peer_id}",
        },
    )


async def whep_delete(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    peer_id = request.match_info["peer_id"]
    if not await request.app[WEBRTC_PEERS].close_peer(peer_id, session_id=session_id):
        raise not_found(f"WebRTC peer of session '{session_id[:128]}'", peer_id, "peer_not_found")
    return web.json_response({"id": peer_id, "deleted": True})


STREAM_WEBRTC_ROUTES: list[Route] = [
    Route(
        "POST",
        WHEP_PATH,
        whep_offer,
        "WHEP: play a streaming session over WebRTC (send the SDP offer, get the answer)",
        body={"type": "string", "description": "the SDP offer (no trickle ICE)"},
        body_type=SDP,
        status=201,
        response_types=(SDP,),
        tags=("streaming",),
    ),
    Route(
        "DELETE",
        WHEP_PATH + "/{peer_id}",
        whep_delete,
        "WHEP: stop playing (the POST's Location)",
        response=spec.DELETED,
        tags=("streaming",),
    ),
]
