"""Avatar sessions as the control API sees them: LiveKit rooms it created, each watched
through a participant of its own.

A session is a room named by its id, marked as ours by its metadata. For each, the hub keeps a
`SessionLink`: a connection to the room as a data-only participant (kind `agent`, so the
agent's voice pipeline never mistakes it for the user) that

* reads the avatar's state from its participant attributes (`avatar.*`, kept current by the
  LiveKit SDK, so a GET costs no round trip),
* sends controls as RPCs to the avatar participant and to the agent participant, and
* turns room events into the events of `WS /ws/{session_id}`.

Nothing here imports the agent: the room is the only thing the two share. Rooms outlive this
process; after a restart a session is found again from its room's metadata.

Rooms do not outlive a restart of a single livekit-server: it forgets them. Its participants
(this one, the agent, viewers) reconnect to the server that comes back and, by joining, create
an empty room of the same name, without our metadata and without the agent dispatch. Such a
session is lost: when this participant reconnects, the hub asks LiveKit whether the room is
still the one it created (it still carries the metadata) and otherwise ends the session
(`session_ended`, then 404) and deletes the room, which ends the agent's job in it. A session
is never reported live from a room the server lost.

An agent that dies (its job process killed or crashed) leaves the room without saying so: its
worker removes its participant (agent/dead_jobs.py), or the server drops it after ~20 s. A
departure of the session's agent that the agent did not initiate is answered with an
`agent_lost` event and a new dispatch (LiveKit dispatches nothing again by itself), up to
MAX_REDISPATCHES times per session; past that the session ends. It also ends when no agent
joins the new dispatch (its whole worker died, and no other worker takes the session over).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from livekit import api, rtc
from livekit.api.twirp_client import TwirpError

from avatar_runtime.controls import (
    DEFAULT_STATE,
    EMOTION_ATTRIBUTE,
    merge_state,
    state_from_attributes,
)
from avatar_runtime.dispatch import dispatch_until_joined
from avatar_runtime.publisher import STATS_ATTRIBUTE
from renderers.errors import short_reason

from .config import Settings
from .errors import ApiError

log = logging.getLogger("control_api")

METADATA_KEY = "avatar_agents"
PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
AGENT_READY_ATTRIBUTE = "agent.ready"
"""Set by the agent once it answers `agent.say` and `agent.interrupt` (agent/session_rpc.py)."""
CONTROL_IDENTITY_PREFIX = "control-api-"
EVENT_QUEUE_SIZE = 256
_REAP_INTERVAL_S = 5.0
_ROOM_CHECK_ATTEMPTS = 5
MAX_REDISPATCHES = 2
"""New agents a session gets after its agent died, before it is ended instead."""
_ORDERLY_LEAVES = (
    rtc.DisconnectReason.CLIENT_INITIATED,  # its job ended (the user left, a duplicate, ...)
    rtc.DisconnectReason.ROOM_DELETED,
    rtc.DisconnectReason.ROOM_CLOSED,
    rtc.DisconnectReason.SERVER_SHUTDOWN,  # the whole room goes: see `_check_room`
    rtc.DisconnectReason.DUPLICATE_IDENTITY,
    rtc.DisconnectReason.MIGRATION,
)
"""Ways the agent leaves that are no death: anything else (removed by its worker, a signal
connection that closed or timed out) gets the session a new agent."""
_ROOM_CHECK_RETRY_S = 1.0
_CONNECT_TIMEOUT_S = 10.0
_KIND_NAMES = {
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD: "standard",
    rtc.ParticipantKind.PARTICIPANT_KIND_INGRESS: "ingress",
    rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS: "egress",
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP: "sip",
    rtc.ParticipantKind.PARTICIPANT_KIND_AGENT: "agent",
}
# People (and phones) keep a session alive; agents and our own participant do not.
_VISITOR_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
)

# rtc.RpcError codes of the SDK itself, as HTTP errors.
_RPC_TIMEOUTS = (
    rtc.RpcError.ErrorCode.CONNECTION_TIMEOUT,
    rtc.RpcError.ErrorCode.RESPONSE_TIMEOUT,
)
_RPC_GONE = (
    rtc.RpcError.ErrorCode.RECIPIENT_DISCONNECTED,
    rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND,
)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SessionRecord:
    """What the room's metadata remembers about a session."""

    session_id: str
    avatar_id: str
    created_at: str

    def metadata(self) -> str:
        return json.dumps(
            {METADATA_KEY: {"avatar_id": self.avatar_id, "created_at": self.created_at}}
        )

    @classmethod
    def from_room(cls, room: api.Room) -> SessionRecord | None:
        """The record in a room's metadata; None for rooms that are not sessions of ours."""
        try:
            ours = json.loads(room.metadata or "{}").get(METADATA_KEY)
        except (ValueError, AttributeError):
            return None
        if not isinstance(ours, dict):
            return None
        return cls(
            session_id=room.name,
            avatar_id=str(ours.get("avatar_id", "default")),
            created_at=str(ours.get("created_at", "")),
        )


class SessionLink:
    """The control API's participant in one session's room."""

    def __init__(self, record: SessionRecord, settings: Settings) -> None:
        self.record = record
        self._settings = settings
        self.room = rtc.Room()
        self.identity = CONTROL_IDENTITY_PREFIX + secrets.token_hex(4)
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._avatar_identity: str | None = None
        self._last_visitor = time.monotonic()
        self.closed = asyncio.Event()
        self.watcher: asyncio.Future[None] | None = None  # the hub's forget-when-closed task
        self.agent_joined = asyncio.Event()
        self.dispatch_watch: asyncio.Task[None] | None = None
        self.on_reconnected: Callable[[SessionLink], None] | None = None
        """Called when this participant has reconnected to LiveKit (the hub checks the room)."""
        self.on_agent_lost: Callable[[SessionLink], None] | None = None
        """Called when the session's agent left the room without leaving by itself."""
        self.redispatches = 0
        self._agent_identity: str | None = None  # the agent the avatar speaks for, once known
        self._closing: asyncio.Future[None] | None = None
        self._known_state: dict[str, Any] | None = None
        """The avatar's state as last answered or published (see `state`); None: not read."""
        self._in_doubt = False
        """Reconnecting, or reconnected and not yet known to be in the same room: the avatar
        is not reported as connected (the room may be one a restarted server made anew)."""
        room = self.room
        room.on("participant_connected", self._on_participant_connected)
        room.on("participant_disconnected", self._on_participant_disconnected)
        room.on("participant_attributes_changed", self._on_attributes_changed)
        room.on("disconnected", self._on_disconnected)
        room.on("reconnecting", self._on_reconnecting)
        room.on("reconnected", self._on_reconnected)

    @property
    def session_id(self) -> str:
        return self.record.session_id

    async def connect(self) -> None:
        token = (
            api.AccessToken(self._settings.livekit_api_key, self._settings.livekit_api_secret)
            .with_identity(self.identity)
            .with_name("Avatar control API")
            .with_kind("agent")
            .with_ttl(self._settings.token_ttl)
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=self.session_id,
                    can_publish=False,
                    can_subscribe=False,
                    can_publish_data=True,  # RPC requests travel as data packets
                )
            )
            .to_jwt()
        )
        options = rtc.RoomOptions(auto_subscribe=False)
        await asyncio.wait_for(
            self.room.connect(self._settings.livekit_url, token, options), _CONNECT_TIMEOUT_S
        )
        for participant in self.room.remote_participants.values():
            self._notice(participant)

    async def close(self) -> None:
        """End the link: tell listeners, leave the room. Every call waits for the one
        disconnect; the SDK's room must never be disconnected twice at once."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_once())
        await asyncio.shield(self._closing)

    async def _close_once(self) -> None:
        if self.dispatch_watch is not None:
            self.dispatch_watch.cancel()
        self.closed.set()
        self._publish({"type": "session_ended", "session_id": self.session_id})
        for queue in list(self._subscribers):
            _offer(queue, None)
        with contextlib.suppress(Exception):
            await self.room.disconnect()

    # -- state -------------------------------------------------------------------------------

    @property
    def avatar(self) -> rtc.RemoteParticipant | None:
        if self._avatar_identity is None or self._in_doubt:
            return None
        return self.room.remote_participants.get(self._avatar_identity)

    def agent_identity(self) -> str | None:
        """Who speaks: the participant the avatar publishes for, else the avatar itself."""
        avatar = self.avatar
        if avatar is None:
            return None
        return avatar.attributes.get(PUBLISH_ON_BEHALF) or avatar.identity

    def state(self) -> dict[str, Any]:
        """The avatar's state: the newest of what its last control answered and what its
        attributes said since. Attributes alone would lag a control that has just answered:
        the avatar publishes them a moment after its answer, and a GET right after the POST
        must show its result."""
        avatar = self.avatar
        if avatar is None:
            return dict(DEFAULT_STATE)
        if self._known_state is None:
            self._known_state = state_from_attributes(avatar.attributes)
        return dict(self._known_state)

    def _remember(self, answer: Any) -> None:
        """An avatar control's answer (the whole state after it) is the state from now on."""
        if isinstance(answer, dict) and all(key in answer for key in DEFAULT_STATE):
            self._known_state = {key: answer[key] for key in DEFAULT_STATE}

    def stats(self) -> dict[str, Any]:
        avatar = self.avatar
        raw = avatar.attributes.get(STATS_ATTRIBUTE) if avatar is not None else None
        try:
            stats = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return stats if isinstance(stats, dict) else {}

    def describe(self) -> dict[str, Any]:
        """The session as GET /avatars/{id} shows it."""
        avatar = self.avatar
        return {
            "session_id": self.session_id,
            "room": self.session_id,
            "avatar_id": self.record.avatar_id,
            "created_at": self.record.created_at,
            "avatar_connected": avatar is not None,
            "avatar_identity": avatar.identity if avatar is not None else None,
            **self.state(),
            "participants": [
                {"identity": p.identity, "name": p.name, "kind": _KIND_NAMES.get(p.kind, "other")}
                for p in self.room.remote_participants.values()
            ],
            "stats": self.stats(),
        }

    def idle_for(self) -> float:
        """Seconds since a person (not an agent) was last in the room."""
        if any(p.kind in _VISITOR_KINDS for p in self.room.remote_participants.values()):
            self._last_visitor = time.monotonic()
        return time.monotonic() - self._last_visitor

    # -- controls ----------------------------------------------------------------------------

    async def call_avatar(self, method: str, payload: dict[str, Any] | None = None) -> Any:
        avatar = self.avatar
        if avatar is None:
            raise ApiError(
                409,
                "avatar_not_connected",
                f"the avatar has not joined session '{self.session_id}' yet; retry shortly",
            )
        answer = await self._rpc(avatar.identity, method, payload, who="avatar")
        if avatar.identity == self._avatar_identity:
            self._remember(answer)
        return answer

    async def call_agent(self, method: str, payload: dict[str, Any] | None = None) -> Any:
        identity = self.agent_identity()
        if identity is None:
            raise ApiError(
                409,
                "avatar_not_connected",
                f"the agent has not joined session '{self.session_id}' yet; retry shortly",
            )
        agent = self.room.remote_participants.get(identity)
        if agent is None or agent.attributes.get(AGENT_READY_ATTRIBUTE) != "true":
            raise ApiError(
                409,
                "agent_not_ready",
                f"the agent of session '{self.session_id}' is still starting; retry shortly",
            )
        return await self._rpc(identity, method, payload, who="agent")

    async def _rpc(
        self, identity: str, method: str, payload: dict[str, Any] | None, *, who: str
    ) -> Any:
        try:
            answer = await self.room.local_participant.perform_rpc(
                destination_identity=identity,
                method=method,
                payload=json.dumps(payload or {}),
                response_timeout=self._settings.rpc_timeout_s,
            )
        except rtc.RpcError as error:
            raise _rpc_error(error, who) from None
        except (ConnectionError, RuntimeError) as error:
            raise ApiError(
                503, "livekit_unavailable", f"lost the session's room: {error}"
            ) from None
        try:
            return json.loads(answer) if answer else {}
        except ValueError:
            raise ApiError(
                502, f"{who}_error", f"the {who} answered {method} with no JSON"
            ) from None

    # -- events ------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of this session's events; None marks the end of the session."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._subscribers.add(queue)
        if self.closed.is_set():
            _offer(queue, None)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)

    def _publish(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if not _offer(queue, event):
                # A client this far behind is not reading; end its stream rather than grow.
                log.warning(
                    "session %s: dropping a WebSocket client that fell behind", self.session_id
                )
                self._subscribers.discard(queue)
                _offer(queue, None, force=True)

    def report_error(self, code: str, message: str) -> None:
        self._publish({"type": "error", "code": code, "message": message})

    def _notice(self, participant: rtc.RemoteParticipant) -> None:
        """Recognise the agent (any agent participant) and the avatar (the participant that
        publishes the avatar's state)."""
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.agent_joined.set()
        if self._in_doubt:
            return  # `room_confirmed` notices everyone again
        # Only an agent participant (the agent, or an avatar worker it dispatched) can be the
        # avatar: a viewer may set attributes of its own, avatar.emotion among them.
        if (
            self._avatar_identity is None
            and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            and EMOTION_ATTRIBUTE in participant.attributes
        ):
            self._avatar_identity = participant.identity
            self._agent_identity = (
                participant.attributes.get(PUBLISH_ON_BEHALF) or participant.identity
            )
            self._known_state = None
            self._publish({"type": "avatar_connected", "identity": participant.identity})

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self._publish(
            {
                "type": "participant_joined",
                "identity": participant.identity,
                "kind": _KIND_NAMES.get(participant.kind, "other"),
            }
        )
        self._notice(participant)

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self._publish(
            {
                "type": "participant_left",
                "identity": participant.identity,
                "kind": _KIND_NAMES.get(participant.kind, "other"),
            }
        )
        if participant.identity == self._avatar_identity:
            self._avatar_identity = None
            self._known_state = None
            self._publish({"type": "avatar_disconnected", "identity": participant.identity})
        if participant.identity == self._agent_identity:
            self._agent_identity = None
            reason = participant.disconnect_reason
            if reason not in _ORDERLY_LEAVES and self._closing is None and not self._in_doubt:
                # Not a job that ended and left: a dead process (removed by its worker, or
                # timed out by the server).
                log.warning(
                    "session %s: its agent %s is gone (%s)",
                    self.session_id,
                    participant.identity,
                    rtc.DisconnectReason.Name(reason) if reason is not None else "unknown",
                )
                self._publish(
                    {
                        "type": "agent_lost",
                        "session_id": self.session_id,
                        "identity": participant.identity,
                    }
                )
                if self.on_agent_lost is not None:
                    self.on_agent_lost(self)

    def _on_attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if not isinstance(participant, rtc.RemoteParticipant):
            return
        self._notice(participant)
        if participant.identity != self._avatar_identity:
            return
        changes = state_from_attributes(changed, partial=True)
        if self._known_state is not None and changes:
            merge_state(self._known_state, changes)
        if not changes or not self._subscribers:
            return
        self._publish(
            {
                "type": "state_changed",
                "session_id": self.session_id,
                "changes": changes,
                "session": self.describe(),
            }
        )
        if "speaking" in changes:
            kind = "speaking_started" if changes["speaking"] else "speaking_stopped"
            self._publish({"type": kind, "session_id": self.session_id})

    def _on_reconnecting(self) -> None:
        log.warning("session %s: lost LiveKit, reconnecting", self.session_id)
        self._in_doubt = True

    def room_confirmed(self) -> None:
        """The hub found the room still ours after a reconnection: report the avatar again."""
        if not self._in_doubt:
            return
        self._in_doubt = False
        for participant in self.room.remote_participants.values():
            self._notice(participant)

    def _on_reconnected(self) -> None:
        log.info("session %s: reconnected to LiveKit", self.session_id)
        if self.on_reconnected is not None and not self.closed.is_set():
            self.on_reconnected(self)

    def _on_disconnected(self, reason: Any) -> None:
        log.info("session %s: room closed (%s)", self.session_id, reason)
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_once())


class SessionHub:
    """Every live session of ours, and the LiveKit calls that create and end them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._links: dict[str, SessionLink] = {}
        self._pending: set[str] = set()
        self._lock = asyncio.Lock()
        self._lkapi: api.LiveKitAPI | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    @property
    def lkapi(self) -> api.LiveKitAPI:
        if self._lkapi is None:
            self._lkapi = api.LiveKitAPI(
                self._settings.livekit_http_url,
                self._settings.livekit_api_key,
                self._settings.livekit_api_secret,
            )
        return self._lkapi

    async def start(self) -> None:
        """Find the sessions an earlier run created (best effort: LiveKit may be down)."""
        self._reaper = asyncio.create_task(self._reap_idle(), name="session-reaper")
        try:
            rooms = await self._list_rooms()
        except ApiError as error:
            log.warning("could not look for existing sessions: %s", error.message)
            return
        for room in rooms:
            record = SessionRecord.from_room(room)
            if record is not None and record.session_id not in self._links:
                with contextlib.suppress(ApiError):
                    await self._attach(record)
        if self._links:
            log.info("resumed %d session(s): %s", len(self._links), ", ".join(self._links))

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for check in list(self._checks):
            check.cancel()
        links = list(self._links.values())
        self._links.clear()
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
        if self._lkapi is not None:
            await self._lkapi.aclose()

    def __len__(self) -> int:
        return len(self._links)

    def links(self) -> Iterator[SessionLink]:
        return iter(list(self._links.values()))

    def stats(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for link in self.links():
            yield link.session_id, link.stats()

    async def get(self, session_id: str) -> SessionLink:
        link = self._links.get(session_id)
        if link is not None and not link.closed.is_set():
            return link
        # Not known here: a session an earlier run (or another instance) created?
        rooms = await self._list_rooms([session_id])
        record = SessionRecord.from_room(rooms[0]) if rooms else None
        if record is None:
            raise ApiError(404, "session_not_found", f"no session named '{session_id}'")
        link = self._links.get(session_id)  # attached by a concurrent request meanwhile?
        if link is not None and not link.closed.is_set():
            return link
        return await self._attach(record)

    async def create(self, session_id: str, avatar_id: str) -> SessionLink:
        async with self._lock:  # the limit and the id check must see each other's creations
            if session_id in self._links or session_id in self._pending:
                raise _exists(session_id)
            if len(self._links) + len(self._pending) >= self._settings.max_sessions:
                raise ApiError(
                    429,
                    "session_limit",
                    f"{self._settings.max_sessions} sessions are live, the most allowed "
                    "(AVATAR_MAX_SESSIONS); delete one first",
                )
            self._pending.add(session_id)
        try:
            if await self._list_rooms([session_id]):
                raise _exists(session_id)
            record = SessionRecord(session_id, avatar_id, utc_now())
            job_metadata = _job_metadata(record)
            await self._livekit(
                self.lkapi.room.create_room(
                    api.CreateRoomRequest(
                        name=session_id,
                        metadata=record.metadata(),
                        empty_timeout=int(self._settings.session_idle_timeout_s),
                        departure_timeout=int(self._settings.session_idle_timeout_s),
                        # Viewers lip-sync the avatar's audio and video only in such rooms.
                        sync_streams=True,
                        # Dispatched with the room, in one call, instead of LiveKit's default
                        # dispatch to unnamed agents.
                        agents=[
                            api.RoomAgentDispatch(
                                agent_name=self._settings.agent_name, metadata=job_metadata
                            )
                        ],
                    )
                )
            )
            try:
                link = await self._attach(record)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.delete(session_id)
                raise
            link.dispatch_watch = asyncio.create_task(
                self._see_agent_joins(link, job_metadata), name=f"dispatch-{session_id}"
            )
            return link
        finally:
            self._pending.discard(session_id)

    async def delete(self, session_id: str) -> None:
        link = self._links.pop(session_id, None)
        if link is None:
            await self.get(session_id)  # 404 unless it is a session of ours
            link = self._links.pop(session_id, None)
        if link is not None:
            # Leave first: the SDK must not be disconnecting us while the server closes the room.
            await link.close()
        await self._livekit(self.lkapi.room.delete_room(api.DeleteRoomRequest(room=session_id)))

    async def _see_agent_joins(self, link: SessionLink, job_metadata: str) -> None:
        """Dispatch the agent again while it has not joined (avatar_runtime.dispatch says why
        LiveKit can drop a dispatch); tell the session's listeners when it never does."""
        request = api.CreateAgentDispatchRequest(
            agent_name=self._settings.agent_name, room=link.session_id, metadata=job_metadata
        )
        try:
            joined = await dispatch_until_joined(
                self.lkapi, request, link.agent_joined.is_set, already_dispatched=True
            )
        except (TwirpError, aiohttp.ClientError, OSError) as error:
            log.warning(
                "session %s: could not dispatch the agent again: %s", link.session_id, error
            )
            return
        if not joined:
            log.error(
                "session %s: no agent joined; is a worker running with AVATAR_AGENT_NAME=%s?",
                link.session_id,
                self._settings.agent_name,
            )
            link.report_error(
                "agent_unavailable",
                f"no agent '{self._settings.agent_name}' joined; check that a worker is running",
            )

    async def _attach(self, record: SessionRecord) -> SessionLink:
        link = SessionLink(record, self._settings)
        try:
            await link.connect()
        except (TimeoutError, rtc.ConnectError, ConnectionError) as error:
            await link.close()
            raise ApiError(
                503, "livekit_unavailable", f"could not join session '{record.session_id}': {error}"
            ) from None
        if METADATA_KEY not in link.room.metadata:
            # The room was deleted between listing it and joining it (the session was ending,
            # here or on another replica): joining made an empty room of the same name. Leave
            # it; LiveKit removes an empty room by itself.
            await link.close()
            raise ApiError(404, "session_not_found", f"no session named '{record.session_id}'")
        link.on_reconnected = self._check_room_later
        link.on_agent_lost = self._redispatch_later
        old = self._links.get(record.session_id)
        self._links[record.session_id] = link
        if old is not None:
            await old.close()
        link.watcher = asyncio.ensure_future(self._forget_when_closed(link))
        return link

    def _redispatch_later(self, link: SessionLink) -> None:
        task = asyncio.create_task(self._redispatch(link), name=f"redispatch-{link.session_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _redispatch(self, link: SessionLink) -> None:
        """Dispatch a new agent to a session whose agent died; end the session when that
        keeps happening (a job that dies at every start would otherwise loop forever)."""
        if link.redispatches >= MAX_REDISPATCHES:
            log.error(
                "session %s: its agent died %d times; ending the session",
                link.session_id,
                link.redispatches + 1,
            )
            link.report_error("agent_failed", "the agent kept failing; the session was ended")
            with contextlib.suppress(ApiError):
                await self.delete(link.session_id)
            await link.close()
            return
        if link.closed.is_set() or self._links.get(link.session_id) is not link:
            return
        link.redispatches += 1
        link.agent_joined.clear()
        request = api.CreateAgentDispatchRequest(
            agent_name=self._settings.agent_name,
            room=link.session_id,
            metadata=_job_metadata(link.record),
        )
        log.info("session %s: dispatching a new agent", link.session_id)
        try:
            joined = await dispatch_until_joined(self.lkapi, request, link.agent_joined.is_set)
        except (TwirpError, aiohttp.ClientError, OSError) as error:
            log.warning("session %s: could not dispatch a new agent: %s", link.session_id, error)
            joined = False
        if not joined and not link.closed.is_set():
            # No worker took the session over (every worker gone, or all full): it has no
            # agent and will get none, so it ends rather than stay listed as live.
            log.error(
                "session %s: no agent '%s' joined after its agent died; ending the session",
                link.session_id,
                self._settings.agent_name,
            )
            link.report_error(
                "agent_unavailable",
                f"no agent '{self._settings.agent_name}' joined again; the session was ended",
            )
            with contextlib.suppress(ApiError):
                await self.delete(link.session_id)
            await link.close()

    def _check_room_later(self, link: SessionLink) -> None:
        task = asyncio.create_task(self._check_room(link), name=f"check-{link.session_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check_room(self, link: SessionLink) -> None:
        """After `link` reconnected: end its session if LiveKit lost the room (a restarted
        server; the room there now is one that the reconnecting participants made anew)."""
        for attempt in range(_ROOM_CHECK_ATTEMPTS):
            try:
                rooms = await self._list_rooms([link.session_id])
                break
            except ApiError as error:
                if attempt == _ROOM_CHECK_ATTEMPTS - 1:
                    # Unknown is not live. Should the room still be ours, the next request
                    # for the session finds it again (`get`).
                    log.warning(
                        "session %s: could not check its room (%s); leaving it",
                        link.session_id,
                        error.message,
                    )
                    await link.close()
                    return
                await asyncio.sleep(_ROOM_CHECK_RETRY_S)
        if rooms and SessionRecord.from_room(rooms[0]) is not None:
            # The same room: the server kept it (a network blip, or a LiveKit cluster).
            link.room_confirmed()
            return
        if link.closed.is_set() or self._links.get(link.session_id) is not link:
            return
        log.warning(
            "session %s: LiveKit lost its room (was the server restarted?); ending the session",
            link.session_id,
        )
        with contextlib.suppress(ApiError):
            # Delete the room the reconnecting participants recreated: the agent's job in it
            # ends, and viewers are told, instead of staying in a room no session owns.
            await self.delete(link.session_id)
        await link.close()  # also when the delete failed: never report the session as live

    async def _forget_when_closed(self, link: SessionLink) -> None:
        await link.closed.wait()
        if self._links.get(link.session_id) is link:
            del self._links[link.session_id]

    async def _list_rooms(self, names: list[str] | None = None) -> list[api.Room]:
        response = await self._livekit(
            self.lkapi.room.list_rooms(api.ListRoomsRequest(names=names or []))
        )
        return list(response.rooms)

    async def _livekit(self, call: Any) -> Any:
        """Await a LiveKit API call, as ApiErrors when LiveKit fails or cannot be reached."""
        try:
            return await call
        except TwirpError as error:
            raise ApiError(502, "livekit_error", f"LiveKit refused: {error.message}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise ApiError(
                503,
                "livekit_unavailable",
                f"cannot reach LiveKit at {self._settings.livekit_http_url}: "
                f"{short_reason(error, 'no connection or no answer in time')}",
            ) from None

    async def _reap_idle(self) -> None:
        limit = self._settings.session_idle_timeout_s
        while True:
            await asyncio.sleep(min(_REAP_INTERVAL_S, limit / 2))
            for link in self.links():
                if link.idle_for() >= limit:
                    log.info(
                        "session %s: nobody joined for %.0f s, closing it", link.session_id, limit
                    )
                    with contextlib.suppress(ApiError):
                        await self.delete(link.session_id)


def _job_metadata(record: SessionRecord) -> str:
    """What the agent's job is dispatched with (agent/avatar_source.py reads it)."""
    return json.dumps({"avatar_id": record.avatar_id, "session_id": record.session_id})


def _exists(session_id: str) -> ApiError:
    return ApiError(
        409,
        "session_exists",
        f"a session or room named '{session_id}' already exists; pick another session_id",
    )


def _rpc_error(error: rtc.RpcError, who: str) -> ApiError:
    code = error.code
    if code in _RPC_TIMEOUTS:
        return ApiError(504, f"{who}_timeout", f"the {who} did not answer in time")
    if code in _RPC_GONE:
        return ApiError(409, "avatar_not_connected", f"the {who} has left the session")
    if 2400 <= code < 2600:  # ours: 2000 + the HTTP status (avatar_runtime.controls)
        extra: dict[str, Any] = {}
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(error.data or "")
            if isinstance(data, dict) and isinstance(data.get("valid"), list):
                extra["valid"] = data["valid"]
        status = code - 2000
        name = {400: "invalid_body", 409: "conflict", 422: "invalid_value"}.get(
            status, f"{who}_error"
        )
        return ApiError(status if status != 500 else 502, name, error.message, **extra)
    return ApiError(502, f"{who}_error", f"the {who} failed: {error.message}")


def _offer(queue: asyncio.Queue[Any], item: Any, *, force: bool = False) -> bool:
    try:
        queue.put_nowait(item)
        return True
    except asyncio.QueueFull:
        if force:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(item)
        return False
