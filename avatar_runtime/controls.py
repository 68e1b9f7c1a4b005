"""Controls for a live avatar over LiveKit RPC, and its state as participant attributes.

Whoever publishes the avatar (the agent itself in-process, the avatar worker in remote mode)
answers these RPC methods, so a control API or a front end reaches a live avatar with nothing
but a LiveKit connection:

* `avatar.set_emotion`, payload `{"emotion": str, "intensity": float in 0..1}` (intensity
  defaults to 0.7): the expression of the next rendered frame on. A renderer with no emotion
  control (wav2lip, testcard) keeps the state but cannot show it: answers say so with
  `emotion_shown: false`;
* `avatar.set_background`, payload `{"background_id": str}`: `original`, `blur`,
  `color:#RRGGBB` or a registered image id, shown from the next emitted frame on;
* `avatar.get_state`, no payload;
* `avatar.interrupt`, no payload: stops the current speech (see `on_interrupt`).

Every answer is the state after the call, as JSON:
`{"emotion": str, "intensity": float, "background": str, "speaking": bool, "emotions": [str],
"emotion_shown": bool, "renderer_error": {...} | null}`, where `emotions` are those the
renderer can show.

Failures are `rtc.RpcError`s with the codes below; the message says what was wrong and lists
what is valid (cut to the 256 bytes an RPC error message may carry), and `data` holds
`{"valid": [...]}` in full where there is a list. The SDK reserves codes 1001-1999 for its own
errors, so ours are 2000 plus the HTTP status that fits: a control API can answer
`code - 2000`.

The same state is published as participant attributes, set at `register()` and after every
change: `avatar.emotion`, `avatar.intensity`, `avatar.background`, `avatar.speaking`
(`"true"`/`"false"`, following the publisher's playback), `avatar.emotions` (the
renderer's, a JSON list; `[]` when it shows none) and `avatar.renderer_error`: while the
renderer is failing or hung (the avatar then shows its idle picture, its audio goes on), a JSON
object `{"code": "render_failed" | "render_timeout", "message": str, "since": ISO 8601 UTC}`;
the attribute is removed (set to "") when the renderer works again. In the state it is
`renderer_error`, that object or null.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from livekit import rtc

from .backgrounds import BackgroundLibrary, valid_backgrounds
from .generator import AvatarVideoGenerator, RendererFault
from .publisher import AvatarPublisher
from .state import EMOTIONS, AvatarState

logger = logging.getLogger("avatar_runtime")

SET_EMOTION = "avatar.set_emotion"
SET_BACKGROUND = "avatar.set_background"
GET_STATE = "avatar.get_state"
INTERRUPT = "avatar.interrupt"
METHODS = (SET_EMOTION, SET_BACKGROUND, GET_STATE, INTERRUPT)

EMOTION_ATTRIBUTE = "avatar.emotion"
INTENSITY_ATTRIBUTE = "avatar.intensity"
BACKGROUND_ATTRIBUTE = "avatar.background"
SPEAKING_ATTRIBUTE = "avatar.speaking"
EMOTIONS_ATTRIBUTE = "avatar.emotions"
RENDERER_ERROR_ATTRIBUTE = "avatar.renderer_error"

BAD_REQUEST = 2400
"""The payload is not JSON, not an object, misses a field, has an unknown one or a wrong type."""
CANNOT_INTERRUPT = 2409
"""`on_interrupt` refused (e.g. the agent session is not running, or the speech is not
interruptible)."""
INVALID_VALUE = 2422
"""Well-formed, but the emotion, intensity or background is not one that is valid."""
INTERNAL_ERROR = 2500
"""Anything unexpected inside a handler (logged here)."""
NOT_SUPPORTED = 2501
"""`avatar.interrupt` on an avatar that was given no way to interrupt."""

DEFAULT_STATE: dict[str, Any] = {
    "emotion": "neutral",
    "intensity": 0.0,
    "background": "original",
    "speaking": False,
    "emotions": [],
    "emotion_shown": False,
    "renderer_error": None,
}
"""The state of an avatar that has not published its attributes yet."""
_STATE_ATTRIBUTES = {
    EMOTION_ATTRIBUTE: "emotion",
    INTENSITY_ATTRIBUTE: "intensity",
    BACKGROUND_ATTRIBUTE: "background",
    SPEAKING_ATTRIBUTE: "speaking",
    EMOTIONS_ATTRIBUTE: "emotions",
    RENDERER_ERROR_ATTRIBUTE: "renderer_error",
}

DEFAULT_INTENSITY = 0.7
INTERRUPT_WAIT_S = 5.0
"""How long `avatar.interrupt` waits for `on_interrupt`'s awaitable before answering anyway."""
_MESSAGE_BYTES = 256  # LiveKit truncates longer RPC error messages,
_DATA_BYTES = 15360  # and longer error data
_RETRY_S = 1.0
_EMOTION_FIELDS = frozenset({"emotion"})
_INTENSITY_FIELD = frozenset({"intensity"})
_BACKGROUND_FIELDS = frozenset({"background_id"})

InterruptHandler = Callable[[], Awaitable[Any] | None]


class AvatarControls:
    """The RPC methods and state attributes of one avatar, on `room`'s local participant.

    `state` is the AvatarState the generator reads; `library` resolves background image ids.
    `on_interrupt` stops the current speech (an AgentSession's `interrupt`, or the publisher's
    own `interrupt`); it may return an awaitable, which is awaited up to INTERRUPT_WAIT_S.
    Without it `avatar.interrupt` answers NOT_SUPPORTED. `publisher` supplies `speaking`
    (False without one). `shown_emotions` are the renderer's (`capabilities.emotions`; None:
    all of EMOTIONS). `generator` supplies `renderer_error` (None without one).
    """

    def __init__(
        self,
        room: rtc.Room,
        state: AvatarState,
        library: BackgroundLibrary | None,
        on_interrupt: InterruptHandler | None = None,
        *,
        publisher: AvatarPublisher | None = None,
        shown_emotions: Sequence[str] | None = None,
        generator: AvatarVideoGenerator | None = None,
    ) -> None:
        self._room = room
        self._generator = generator
        self._state = state
        self._library = library
        self._on_interrupt = on_interrupt
        self._publisher = publisher
        self._shown_emotions = tuple(EMOTIONS if shown_emotions is None else shown_emotions)
        self._registered = False
        self._changed = asyncio.Event()
        self._stop_unpublished = False  # speaking went false since the last write
        self._published: dict[str, str] = {}
        self._attribute_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def register(self) -> None:
        """Answer the RPC methods and publish the state attributes (now and on every change).
        Call it on the event loop of a connected room."""
        if self._registered:
            return
        local = self._room.local_participant
        for method, handler in (
            (SET_EMOTION, self._set_emotion),
            (SET_BACKGROUND, self._set_background),
            (GET_STATE, self._get_state),
            (INTERRUPT, self._interrupt),
        ):
            local.register_rpc_method(method, guarded(method, handler))
        if self._publisher is not None:
            self._publisher.add_speaking_listener(self._on_speaking)
        if self._generator is not None:
            self._generator.add_fault_listener(self._on_fault)
        self._registered = True
        self._published = {}  # publish every attribute again: another writer may have run
        self._attribute_task = asyncio.create_task(
            self._publish_attributes(), name="avatar-state-attributes"
        )
        self._changed.set()

    def unregister(self) -> None:
        """Stop answering and publishing. Safe to call twice, and after the room is gone."""
        if not self._registered:
            return
        self._registered = False
        if self._publisher is not None:
            self._publisher.remove_speaking_listener(self._on_speaking)
        if self._generator is not None:
            self._generator.remove_fault_listener(self._on_fault)
        if self._attribute_task is not None:
            self._attribute_task.cancel()
            self._attribute_task = None
        try:
            local = self._room.local_participant
            for method in METHODS:
                local.unregister_rpc_method(method)
        except Exception:
            logger.debug("could not unregister the avatar's RPC methods", exc_info=True)

    # -- state -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state every method answers with."""
        expression = self._state.expression()
        fault = self._generator.renderer_error if self._generator is not None else None
        return {
            "emotion": expression.emotion,
            "intensity": expression.intensity,
            "background": self._state.background,
            "speaking": self._publisher.speaking if self._publisher is not None else False,
            "emotions": list(self._shown_emotions),
            "emotion_shown": expression.emotion in self._shown_emotions,
            "renderer_error": fault.to_dict() if fault is not None else None,
        }

    def attributes(self) -> dict[str, str]:
        """The state as participant attributes."""
        state = self.snapshot()
        return {
            EMOTION_ATTRIBUTE: state["emotion"],
            INTENSITY_ATTRIBUTE: str(float(state["intensity"])),
            BACKGROUND_ATTRIBUTE: state["background"],
            SPEAKING_ATTRIBUTE: "true" if state["speaking"] else "false",
            # JSON, not a joined list: LiveKit deletes an attribute set to "".
            EMOTIONS_ATTRIBUTE: json.dumps(state["emotions"], separators=(",", ":")),
            # "" removes the attribute: no error, nothing for a viewer to read.
            RENDERER_ERROR_ATTRIBUTE: (
                json.dumps(state["renderer_error"], separators=(",", ":"))
                if state["renderer_error"] is not None
                else ""
            ),
        }

    def _answer(self) -> str:
        self._changed.set()
        return json.dumps(self.snapshot())

    def _on_fault(self, _fault: RendererFault | None) -> None:
        self._changed.set()

    def _on_speaking(self, speaking: bool) -> None:
        if not speaking:
            self._stop_unpublished = True
        self._changed.set()

    async def _publish_attributes(self) -> None:
        """One writer, so attributes are set in order; bursts of changes coalesce into one
        update of the keys that differ from what was last published.

        Except a stop of speaking: when speech stopped and started again while a write was
        on its way (an interruption, then the next answer), `false` is published on its own
        first, so watchers see the utterance end instead of one long one."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            wanted = self.attributes()
            stop_first = (
                self._stop_unpublished
                and wanted[SPEAKING_ATTRIBUTE] == "true"
                and self._published.get(SPEAKING_ATTRIBUTE) == "true"
            )
            self._stop_unpublished = False
            if stop_first:
                wanted = {SPEAKING_ATTRIBUTE: "false"}
                self._changed.set()  # the rest, speaking again included, right after
            changed = {k: v for k, v in wanted.items() if self._published.get(k) != v}
            if not changed:
                continue
            try:
                if not self._room.isconnected():
                    raise ConnectionError("room not connected")
                await self._room.local_participant.set_attributes(changed)
            except Exception:
                logger.debug("could not publish avatar state attributes", exc_info=True)
                self._stop_unpublished = self._stop_unpublished or stop_first
                await asyncio.sleep(_RETRY_S)
                self._changed.set()
                continue
            self._published.update(changed)

    # -- handlers ----------------------------------------------------------------------------

    async def _set_emotion(self, payload: str) -> str:
        request = payload_object(payload, required=_EMOTION_FIELDS, optional=_INTENSITY_FIELD)
        self.set_emotion(request["emotion"], request.get("intensity", DEFAULT_INTENSITY))
        return self._answer()

    async def _set_background(self, payload: str) -> str:
        request = payload_object(payload, required=_BACKGROUND_FIELDS)
        self.set_background(request["background_id"])
        return self._answer()

    async def _get_state(self, _payload: str) -> str:
        return self._answer()

    async def _interrupt(self, _payload: str) -> str:
        await self.interrupt()
        return self._answer()

    # -- the same controls, called in-process --------------------------------------------------

    def set_emotion(self, emotion: object, intensity: object = DEFAULT_INTENSITY) -> dict[str, Any]:
        """Validate and apply an emotion (ControlError if it is not valid); the new state."""
        if not isinstance(emotion, str):
            raise ControlError(BAD_REQUEST, "'emotion' must be a string")
        if isinstance(intensity, bool) or not isinstance(intensity, int | float):
            raise ControlError(BAD_REQUEST, "'intensity' must be a number")
        if emotion not in EMOTIONS:
            raise _invalid(f"unknown emotion {_clip(emotion)!r}", list(EMOTIONS))
        if self._shown_emotions and emotion not in self._shown_emotions:
            # A renderer with some emotions but not this one (none at all: kept, not shown).
            raise _invalid(
                f"this avatar's renderer cannot show {emotion!r}", list(self._shown_emotions)
            )
        intensity = float(intensity)
        if not (math.isfinite(intensity) and 0.0 <= intensity <= 1.0):
            raise ControlError(INVALID_VALUE, "intensity must be between 0 and 1")
        self._state.set_emotion(emotion, intensity)
        self._changed.set()
        return self.snapshot()

    def set_background(self, background_id: object) -> dict[str, Any]:
        """Validate and apply a background (ControlError if it is not valid); the new state."""
        if not isinstance(background_id, str):
            raise ControlError(BAD_REQUEST, "'background_id' must be a string")
        try:
            self._state.set_background(background_id, self._library)
        except ValueError:
            # The library is read once more to list it: a file listing, cheap next to an RPC.
            raise _invalid(
                f"unknown background {_clip(background_id)!r}", valid_backgrounds(self._library)
            ) from None
        self._changed.set()
        return self.snapshot()

    def valid_backgrounds(self) -> list[str]:
        """The background ids `set_background` accepts now (`color:#RRGGBB` stands for any
        colour)."""
        return valid_backgrounds(self._library)

    @property
    def shown_emotions(self) -> tuple[str, ...]:
        """The emotions this avatar's renderer shows (empty: none, the state is only kept)."""
        return self._shown_emotions

    async def interrupt(self) -> dict[str, Any]:
        """Stop the current speech through `on_interrupt` (ControlError if there is none or it
        refuses); the new state."""
        if self._on_interrupt is None:
            raise ControlError(NOT_SUPPORTED, "this avatar cannot be interrupted")
        await run_interrupt(self._on_interrupt)
        self._changed.set()
        return self.snapshot()


class ControlError(ValueError):
    """A control that cannot be applied: `code` is one of the codes above (2000 + an HTTP
    status), `valid` lists the accepted values where there is a list. Over RPC it travels as
    an `rtc.RpcError` with the same code, message and `{"valid": [...]}` as data."""

    def __init__(self, code: int, message: str, valid: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.valid = list(valid) if valid is not None else None

    def to_rpc_error(self) -> rtc.RpcError:
        data = None
        if self.valid is not None:
            encoded = json.dumps({"valid": self.valid})
            data = encoded if len(encoded) <= _DATA_BYTES else None
        return rtc.RpcError(self.code, fit_message(self.message), data)

    @classmethod
    def from_rpc_error(cls, error: rtc.RpcError) -> ControlError:
        valid = None
        if error.data:
            try:
                listed = json.loads(error.data).get("valid")
            except (ValueError, AttributeError):
                listed = None
            if isinstance(listed, list):
                valid = [str(item) for item in listed]
        return cls(error.code, error.message, valid)


def guarded(
    method: str, handler: Callable[[str], Awaitable[str]]
) -> Callable[[rtc.RpcInvocationData], Awaitable[str]]:
    """`handler(payload)` as an RPC handler: RpcErrors pass, ControlErrors become the RpcError
    they stand for, anything else is logged and answered as INTERNAL_ERROR."""

    async def handle(data: rtc.RpcInvocationData) -> str:
        try:
            return await handler(data.payload)
        except rtc.RpcError:
            raise
        except ControlError as error:
            raise error.to_rpc_error() from None
        except Exception:  # the details go to the log, never to the caller
            logger.exception("%s failed", method)
            raise rtc.RpcError(
                INTERNAL_ERROR, fit_message(f"{method} failed: internal error (see the log)")
            ) from None

    return handle


async def run_interrupt(on_interrupt: InterruptHandler) -> None:
    """Call `on_interrupt` and wait for its awaitable up to INTERRUPT_WAIT_S (a slower one is
    left to finish); ControlError CANNOT_INTERRUPT when it raises."""
    try:
        result = on_interrupt()
    except Exception as error:
        raise ControlError(CANNOT_INTERRUPT, f"could not interrupt: {error}") from None
    if inspect.isawaitable(result):
        future = asyncio.ensure_future(result)
        # asyncio.wait, not wait_for: a slow interruption is left to finish, not cancelled.
        await asyncio.wait({future}, timeout=INTERRUPT_WAIT_S)
        if not future.done():
            future.add_done_callback(_consume)
        elif not future.cancelled() and future.exception() is not None:
            failure = future.exception()
            raise ControlError(CANNOT_INTERRUPT, f"could not interrupt: {failure}")


def payload_object(
    payload: str, *, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The payload as a JSON object with exactly these fields (BAD_REQUEST otherwise)."""
    fields = ", ".join(sorted(required | optional))
    try:
        request = json.loads(payload)
    except (ValueError, TypeError):
        raise rtc.RpcError(
            BAD_REQUEST, f"payload is not JSON; send an object with: {fields}"
        ) from None
    if not isinstance(request, dict):
        raise rtc.RpcError(BAD_REQUEST, f"payload must be a JSON object with: {fields}")
    missing = sorted(required - request.keys())
    if missing:
        raise rtc.RpcError(BAD_REQUEST, f"missing {', '.join(missing)}; fields: {fields}")
    unknown = sorted(request.keys() - required - optional)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise rtc.RpcError(BAD_REQUEST, fit_message(f"unknown field {names}; fields: {fields}"))
    return request


def _invalid(what: str, valid: list[str]) -> ControlError:
    """INVALID_VALUE listing as many valid values as the message holds, all of them in data."""
    head = f"{what}; valid: "

    def message(shown: list[str]) -> str:
        more = len(valid) - len(shown)
        return head + ", ".join(shown) + (f", ... ({more} more)" if more else "")

    shown: list[str] = []
    for item in valid:
        if len(message([*shown, item]).encode()) > _MESSAGE_BYTES:
            break
        shown.append(item)
    return ControlError(INVALID_VALUE, message(shown), valid)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a late interruption's outcome so asyncio does not warn about it."""
    if not future.cancelled() and future.exception() is not None:
        logger.warning("interrupting the avatar failed: %s", future.exception())


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def fit_message(message: str) -> str:
    encoded = message.encode()
    if len(encoded) <= _MESSAGE_BYTES:
        return message
    return encoded[: _MESSAGE_BYTES - 3].decode(errors="ignore") + "..."


def state_from_attributes(
    attributes: Mapping[str, str], *, partial: bool = False
) -> dict[str, Any]:
    """The avatar state (as `AvatarControls.snapshot()` gives it) that a participant's
    attributes carry; with `partial`, only what they contain. How another process (the control
    API, a remote-mode AvatarSession) reads an avatar's state without a round trip."""
    state: dict[str, Any] = {} if partial else dict(DEFAULT_STATE)
    for attribute, name in _STATE_ATTRIBUTES.items():
        raw = attributes.get(attribute)
        if raw is None:
            continue
        if name == "intensity":
            try:
                state[name] = float(raw)
            except ValueError:
                continue
        elif name == "speaking":
            state[name] = raw == "true"
        elif name == "emotions":
            try:
                emotions = json.loads(raw)
            except ValueError:
                continue
            if isinstance(emotions, list):
                state[name] = [e for e in emotions if isinstance(e, str)]
        elif name == "renderer_error":
            state[name] = _renderer_error(raw)
        else:
            state[name] = raw
    if "emotions" in state and "emotion" in state:
        state["emotion_shown"] = state["emotion"] in state["emotions"]
    return state


def _renderer_error(raw: str) -> dict[str, str] | None:
    """`avatar.renderer_error` as the state's `renderer_error`: None when it is "" (removed)
    or not the object it should be."""
    if not raw:
        return None
    try:
        error = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(error, dict):
        return None
    fields = ("code", "message", "since")
    if not all(isinstance(error.get(key), str) for key in fields):
        return None
    return {key: error[key] for key in fields}


def merge_state(state: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Apply `changes` (a partial state, as `state_from_attributes(..., partial=True)` reads
    it) to a whole `state`, keeping `emotion_shown` true to the result."""
    state.update(changes)
    state["emotion_shown"] = state["emotion"] in state["emotions"]
