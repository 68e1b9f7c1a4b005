"""The livekit_server fixture gives a real server that rtc clients and the API can use."""

from __future__ import annotations

import uuid

import pytest
from livekit import api, rtc

from tests.livekit_server import DEFAULT_API_KEY, DEFAULT_API_SECRET, LiveKitServer, make_token


@pytest.mark.livekit
async def test_room_connects_and_server_lists_participant(livekit_server: LiveKitServer) -> None:
    room_name = f"fixture-{uuid.uuid4().hex[:8]}"
    identity = "fixture-probe"
    room = rtc.Room()
    server = livekit_server
    lkapi = api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)
    try:
        await room.connect(server.url, make_token(server, identity, room_name))
        assert room.isconnected()
        assert room.name == room_name
        assert room.local_participant.identity == identity

        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room_name))
        assert [p.identity for p in listed.participants] == [identity]
    finally:
        await room.disconnect()
        await lkapi.aclose()
    assert not room.isconnected()


def test_make_token_dispatches_agent() -> None:
    server = LiveKitServer(
        "ws://127.0.0.1:1", "http://127.0.0.1:1", DEFAULT_API_KEY, DEFAULT_API_SECRET
    )
    token = make_token(
        server, "user-1", "room-1", agent_name="avatar", name="User", can_publish=False
    )
    claims = api.TokenVerifier(server.api_key, server.api_secret).verify(token)
    assert claims.identity == "user-1"
    assert claims.name == "User"
    assert claims.video is not None
    assert claims.video.room == "room-1" and claims.video.room_join
    assert claims.video.can_publish is False
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == ["avatar"]
