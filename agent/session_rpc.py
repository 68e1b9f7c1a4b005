"""The agent's own RPC methods: make the AgentSession say something, or stop it speaking.

The participant whose AgentSession speaks (the agent, in both avatar modes) answers:

* `agent.say`, payload `{"text": str, "interrupt"?: bool}`: says `text` (stripped; 1 to
  MAX_TEXT_CHARS characters) after what the session is saying now, or instead of it with
  `"interrupt": true`. Answer: `{"speech_id": str}`, the id of the SpeechHandle.
* `agent.interrupt`, no payload (empty, or `{}`): interrupts the session's current speech, as
  a new chat message does. Answer: `{"interrupted": true}`. In remote mode the interruption
  also clears the avatar worker's playback, through the session's DataStreamAudioOutput.

Errors are `rtc.RpcError`s with the codes of avatar_runtime.controls: BAD_REQUEST (2400) for a
payload that is not a JSON object, misses `text`, has an unknown field or a wrong type;
INVALID_VALUE (2422) for text that is empty or too long; CANNOT_INTERRUPT (2409) when the
session is not running or refuses the interruption; INTERNAL_ERROR (2500) for anything else.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from livekit import rtc
from livekit.agents import AgentSession

from avatar_runtime.controls import (
    BAD_REQUEST,
    CANNOT_INTERRUPT,
    INVALID_VALUE,
    fit_message,
    guarded,
    payload_object,
    run_interrupt,
)

SAY = "agent.say"
INTERRUPT = "agent.interrupt"
METHODS = (SAY, INTERRUPT)

READY_ATTRIBUTE = "agent.ready"
"""Set to "true" on the participant once it answers these methods: a control API asks before
calling, so a call in the moment between the agent joining and its session starting gets
"not ready yet" rather than LiveKit's "unsupported method"."""

MAX_TEXT_CHARS = 1000
_SAY_FIELDS = frozenset({"text"})
_SAY_OPTIONS = frozenset({"interrupt"})


def register_session_rpc(
    participant: rtc.LocalParticipant, session: AgentSession
) -> Callable[[], None]:
    """Answer `agent.say` and `agent.interrupt` on `participant` for `session` (started).
    Returns a function that stops answering them."""

    async def say(payload: str) -> str:
        request = payload_object(payload, required=_SAY_FIELDS, optional=_SAY_OPTIONS)
        text = request["text"]
        if not isinstance(text, str):
            raise rtc.RpcError(BAD_REQUEST, "'text' must be a string")
        interrupt = request.get("interrupt", False)
        if not isinstance(interrupt, bool):
            raise rtc.RpcError(BAD_REQUEST, "'interrupt' must be true or false")
        text = text.strip()
        if not text:
            raise rtc.RpcError(INVALID_VALUE, "'text' is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise rtc.RpcError(
                INVALID_VALUE, f"'text' has {len(text)} characters; at most {MAX_TEXT_CHARS}"
            )
        if interrupt:
            await run_interrupt(session.interrupt)
        try:
            handle = session.say(text)
        except RuntimeError as error:  # the session is not running, or is closing
            raise rtc.RpcError(CANNOT_INTERRUPT, fit_message(f"cannot say: {error}")) from None
        return json.dumps({"speech_id": handle.id})

    async def interrupt(payload: str) -> str:
        if payload.strip():
            payload_object(payload, required=frozenset())
        await run_interrupt(session.interrupt)
        return json.dumps({"interrupted": True})

    for method, handler in ((SAY, say), (INTERRUPT, interrupt)):
        participant.register_rpc_method(method, guarded(method, handler))

    def unregister() -> None:
        for method in METHODS:
            participant.unregister_rpc_method(method)

    return unregister
