"""LiveKit access tokens for people joining a session, and `POST /token`."""

from __future__ import annotations

import secrets

from aiohttp import web
from livekit import api

from .config import Settings
from .context import SETTINGS
from .validation import json_object, optional_id, string

MAX_NAME_LENGTH = 128
TOKEN_FIELDS = ("room", "identity", "name")


def mint_token(
    settings: Settings,
    *,
    room: str,
    identity: str,
    name: str | None = None,
    dispatch_agent: bool = True,
) -> str:
    """A participant token for `room`. With `dispatch_agent` its first join dispatches the
    configured agent; sessions made by `POST /avatars` dispatch it themselves."""
    token = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_ttl(settings.token_ttl)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
                # The web page sets an attribute of its own as it joins: livekit-server tells
                # the others about a participant that publishes nothing only every 3 s, about
                # an attribute change at once, and the agent links to the viewer from then.
                can_update_own_metadata=True,
            )
        )
    )
    if name:
        token = token.with_name(name)
    if dispatch_agent and settings.agent_name:
        # The worker registers with an explicit agent name, so it is only sent to rooms that ask.
        # sync_streams: a room this token creates lets viewers lip-sync the avatar's tracks.
        token = token.with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=settings.agent_name)], sync_streams=True
            )
        )
    return token.to_jwt()


def new_identity() -> str:
    return f"user-{secrets.token_hex(4)}"


async def create_token(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await json_object(request, allowed=TOKEN_FIELDS)
    room = optional_id(body, "room") or f"avatar-{secrets.token_hex(4)}"
    identity = optional_id(body, "identity") or new_identity()
    name = string(body, "name", max_length=MAX_NAME_LENGTH, default="") or None
    token = mint_token(settings, room=room, identity=identity, name=name)
    return web.json_response(
        {"url": settings.public_livekit_url, "token": token, "room": room, "identity": identity},
        headers={"Cache-Control": "no-store"},  # tokens are credentials
    )
