"""Session routes: `/avatars...` and the `WS /ws/{session_id}` event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets

from aiohttp import WSCloseCode, WSMsgType, web

from avatar_runtime import EMOTIONS, parse_background, valid_backgrounds
from avatar_runtime.avatars import canonical_id
from avatar_runtime.controls import (
    DEFAULT_INTENSITY,
    GET_STATE,
    SET_BACKGROUND,
    SET_EMOTION,
)

from .context import AVATARS, BACKGROUNDS, HUB, METRICS, SETTINGS
from .errors import ApiError
from .sessions import SessionLink
from .tokens import mint_token, new_identity
from .validation import (
    ID_PATTERN,
    boolean,
    json_object,
    one_of,
    optional_id,
    string,
    unit_interval,
)

log = logging.getLogger("control_api")

AGENT_SAY = "agent.say"
AGENT_INTERRUPT = "agent.interrupt"
_WS_HEARTBEAT_S = 20.0
MAX_CLIENT_MESSAGE_BYTES = 4096
"""The longest message a client may send on `WS /ws/{session_id}` (a ping is 16 bytes)."""
_WS_MAX_FRAME_BYTES = 64 * 1024


async def _link(request: web.Request) -> SessionLink:
    session_id = request.match_info["session_id"]
    if not ID_PATTERN.fullmatch(session_id):
        raise ApiError(404, "session_not_found", f"no session named '{session_id[:128]}'")
    return await request.app[HUB].get(session_id)


async def create_session(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await json_object(request, allowed=("avatar_id", "session_id"), required=("avatar_id",))
    catalog = request.app[AVATARS]
    valid = await asyncio.to_thread(catalog.ids)  # a directory listing
    # Ids in any case name the catalog's lower-case ones (a prepared UUID id, seed 000).
    requested = canonical_id(body["avatar_id"])
    avatar_id = one_of(requested, valid, field="avatar", code="invalid_avatar")
    session_id = optional_id(body, "session_id") or f"avatar-{secrets.token_hex(4)}"
    link = await request.app[HUB].create(session_id, avatar_id)
    request.app[METRICS].sessions_created.inc()
    identity = new_identity()
    token = mint_token(settings, room=session_id, identity=identity, dispatch_agent=False)
    log.info("session %s created (avatar %s)", session_id, avatar_id)
    return web.json_response(
        {
            "session_id": session_id,
            "room": session_id,
            "avatar_id": avatar_id,
            "livekit_url": settings.public_livekit_url,
            "token": token,
            "identity": identity,
            "created_at": link.record.created_at,
            "ws_url": f"/ws/{session_id}",
        },
        status=201,
        headers={"Cache-Control": "no-store"},  # carries a token
    )


async def list_sessions(request: web.Request) -> web.Response:
    return web.json_response({"sessions": [link.describe() for link in request.app[HUB].links()]})


async def get_session(request: web.Request) -> web.Response:
    return web.json_response((await _link(request)).describe())


async def delete_session(request: web.Request) -> web.Response:
    link = await _link(request)
    await request.app[HUB].delete(link.session_id)
    log.info("session %s deleted", link.session_id)
    return web.json_response({"session_id": link.session_id, "deleted": True})


async def set_emotion(request: web.Request) -> web.Response:
    body = await json_object(request, allowed=("emotion", "intensity"), required=("emotion",))
    emotion = one_of(body["emotion"], list(EMOTIONS), field="emotion", code="invalid_emotion")
    intensity = unit_interval(body, "intensity", DEFAULT_INTENSITY, "invalid_intensity")
    link = await _link(request)
    # The link keeps the avatar's answer as its state: the GET after this one shows it too.
    await link.call_avatar(SET_EMOTION, {"emotion": emotion, "intensity": intensity})
    return web.json_response(link.describe())


async def set_background(request: web.Request) -> web.Response:
    body = await json_object(request, allowed=("background_id",), required=("background_id",))
    spec = body["background_id"]
    library = request.app[BACKGROUNDS]
    try:
        if not isinstance(spec, str):
            raise ValueError(spec)
        await asyncio.to_thread(parse_background, spec, library)
    except ValueError:
        valid = await asyncio.to_thread(valid_backgrounds, library)
        raise ApiError(
            422,
            "invalid_background",
            f"unknown background {repr(spec)[:60]}; valid: {', '.join(valid)}"[:1000],
            valid=valid,
        ) from None
    link = await _link(request)
    await link.call_avatar(SET_BACKGROUND, {"background_id": spec})
    return web.json_response(link.describe())


async def say(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await json_object(request, allowed=("text", "interrupt"), required=("text",))
    text = string(body, "text", max_length=settings.max_say_chars).strip()
    if not text:
        raise ApiError(422, "invalid_field", "'text' is empty; send something to say")
    interrupt = boolean(body, "interrupt", False)
    link = await _link(request)
    answer = await link.call_agent(AGENT_SAY, {"text": text, "interrupt": interrupt})
    speech_id = answer.get("speech_id") if isinstance(answer, dict) else None
    return web.json_response(
        {"session_id": link.session_id, "text": text, "speech_id": speech_id}, status=202
    )


async def interrupt(request: web.Request) -> web.Response:
    await json_object(request, allowed=())
    link = await _link(request)
    await link.call_agent(AGENT_INTERRUPT)
    # The agent's interruption reaches the avatar as a cleared buffer; ask it for its state
    # so the answer does not show "speaking" from before.
    await link.call_avatar(GET_STATE)
    return web.json_response(link.describe())


async def events(request: web.Request) -> web.WebSocketResponse:
    link = await _link(request)
    # The frame limit is aiohttp's (over it, it closes with 1009 and no words); a message over
    # MAX_CLIENT_MESSAGE_BYTES but under it is told why before the socket closes.
    ws = web.WebSocketResponse(heartbeat=_WS_HEARTBEAT_S, max_msg_size=_WS_MAX_FRAME_BYTES)
    await ws.prepare(request)
    queue = link.subscribe()
    await ws.send_json({"type": "state", "session": link.describe()})

    async def forward() -> None:
        while True:
            event = await queue.get()
            if event is None:  # the session ended (announced just before) or we fell behind
                await ws.close()
                return
            await ws.send_json(event)

    sender = asyncio.create_task(forward(), name=f"ws-{link.session_id}")
    try:
        async for message in ws:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            data = message.data
            if len(data.encode() if isinstance(data, str) else data) > MAX_CLIENT_MESSAGE_BYTES:
                text = f"a message is at most {MAX_CLIENT_MESSAGE_BYTES} bytes"
                await ws.send_json({"type": "error", "code": "message_too_large", "message": text})
                await ws.close(code=WSCloseCode.MESSAGE_TOO_BIG, message=text.encode())
                break
            if message.type == WSMsgType.TEXT and _is_ping(data):
                await ws.send_json({"type": "pong"})
            else:
                await ws.send_json(
                    {
                        "type": "error",
                        "code": "invalid_message",
                        "message": 'this socket only accepts the JSON text {"type": "ping"}',
                    }
                )
    finally:
        link.unsubscribe(queue)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
    return ws


def _is_ping(text: str) -> bool:
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
        return False
    return isinstance(message, dict) and message.get("type") == "ping"
