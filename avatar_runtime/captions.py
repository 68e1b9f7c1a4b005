"""The agent's captions from its first word, before anyone is linked.

livekit-agents' RoomIO publishes the agent's transcription (`lk.transcription` text streams,
what a front end shows as captions) only once it has linked a remote participant, and
livekit-server announces a participant that publishes nothing (a viewer without a microphone,
a caption recorder) up to 3 s late: it batches their joins (`subscriberUpdateInterval`). Until
then every word the agent says reaches the room as audio and video but not as text, so a
greeting, or a sentence asked for right after joining, loses its first words on screen.

`publish_captions_unlinked(session)` points the transcription output at the agent's own
identity at once, as RoomIO does itself after linking. Speech then carries its captions to
whoever is in the room. (When RoomIO links later it sets the same identity again, which
closes a segment being spoken at that moment and goes on in a new one.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.io import TextOutput

logger = logging.getLogger(__name__)


def publish_captions_unlinked(session: AgentSession, room: rtc.Room) -> bool:
    """Start `session`'s room transcription now, without waiting for a linked participant.

    Call it after `session.start(room=...)`. True when the output was pointed at the agent;
    False when there is nothing to do: the session has no room transcription, RoomIO has
    already linked someone, or livekit-agents changed its output chain (then RoomIO's own
    timing applies and a warning says so)."""
    try:
        room_io = session.room_io
    except RuntimeError:  # started without a room (console)
        return False
    if room_io.linked_participant is not None:
        return False
    set_participant = _participant_setter(room_io.transcription_output)
    if set_participant is None:
        if room_io.transcription_output is not None:
            logger.warning(
                "captions wait for a linked participant: no transcription output with "
                "set_participant in this livekit-agents version"
            )
        return False
    set_participant(room.local_participant.identity)
    return True


def _participant_setter(output: TextOutput | None) -> Callable[[str], None] | None:
    """`set_participant` of the RoomIO output in the chain (behind the transcript
    synchronizer when there is one): the first output that can be pointed at a participant."""
    while output is not None:
        setter = getattr(output, "set_participant", None)
        if callable(setter):
            return cast(Callable[[str], None], setter)
        output = output.next_in_chain
    return None


__all__ = ["publish_captions_unlinked"]
