"""`ClearingAudioReceiver`: livekit-agents' `DataStreamAudioReceiver` that forgets, on
`clear_buffer`, everything the agent sent before it.

In remote mode the agent streams each utterance as one byte stream and interrupts with the
`lk.clear_buffer` RPC. livekit-agents' receiver (1.8) stops reading the stream that is current
when the clear arrives, but then still yields that stream's `AudioSegmentEnd`, and it plays any
stream that had already arrived and was waiting its turn. The avatar's generator counts each as
an utterance (an end with no audio is an empty one), so after an interruption the utterance
counter moved by one more than the turns whenever the interrupted reply was still streaming.
Here every item is tagged with the stream it came from, and after a clear the items of streams
that had arrived by then are dropped. A stream that arrives after the clear is new speech: the
agent's `DataStreamAudioOutput` opens the next utterance only once its clear RPC is answered.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from livekit import rtc
from livekit.agents import utils
from livekit.agents.voice.avatar import AudioSegmentEnd, DataStreamAudioReceiver

logger = logging.getLogger("avatar_runtime")

_Item = rtc.AudioFrame | AudioSegmentEnd
_KEEP_SEGMENTS = 64


class _TaggedChan(utils.aio.Chan[_Item]):
    """A channel that remembers, for each item, the number of the stream it came from; the
    tag of the item received last is `last_tag`."""

    def __init__(self, tag: Callable[[], int]) -> None:
        super().__init__()
        self._tag = tag
        self._tags: deque[int] = deque()
        self.last_tag = 0

    def send_nowait(self, value: _Item) -> None:
        super().send_nowait(value)
        self._tags.append(self._tag())

    def recv_nowait(self) -> _Item:
        item = super().recv_nowait()
        self.last_tag = self._tags.popleft()
        return item


class ClearingAudioReceiver(DataStreamAudioReceiver):
    """A `DataStreamAudioReceiver` whose `clear_buffer` drops the rest of every stream that had
    arrived before it (the current one and those waiting), their segment ends included."""

    def __init__(self, room: rtc.Room, **kwargs: Any) -> None:
        self._reader: rtc.ByteStreamReader | None = None
        self._streams_started = 0  # streams the base has begun to read, in arrival order
        self._stale_through = 0  # streams numbered up to this one were cleared
        super().__init__(room, **kwargs)
        # The base's queue between its stream reader and `__anext__` (livekit-agents 1.8).
        self._data_ch = _TaggedChan(lambda: self._streams_started)
        self.segments: dict[int, dict[str, Any]] = {}
        """The last streams by number, what came out of each (for diagnostics and tests):
        stream id, frames, samples, whether it ended, whether a clear cut it."""

    # The base assigns `_current_reader` when it starts on the next stream (in arrival order).
    @property
    def _current_reader(self) -> rtc.ByteStreamReader | None:
        return self._reader

    @_current_reader.setter
    def _current_reader(self, reader: rtc.ByteStreamReader | None) -> None:
        self._reader = reader
        if reader is not None:
            self._streams_started += 1
            self.segments.pop(self._streams_started - _KEEP_SEGMENTS, None)
            self.segments[self._streams_started] = {
                "stream": reader.info.stream_id,
                "frames": 0,
                "samples": 0,
                "ended": False,
                "cleared": False,
            }

    def emit(self, event: Literal["clear_buffer"], *args: Any) -> None:
        if event == "clear_buffer":
            # Runs inside the base's RPC handler, before any listener (the publisher) clears.
            waiting = len(self._stream_readers)
            self._stale_through = self._streams_started + waiting
            if self._reader is not None and self._streams_started in self.segments:
                self.segments[self._streams_started]["cleared"] = True
            logger.debug(
                "clear_buffer: dropping streams up to #%d (%d waiting)",
                self._stale_through,
                waiting,
            )
        super().emit(event, *args)

    async def __anext__(self) -> _Item:
        while True:
            item = await super().__anext__()
            tag = self._data_ch.last_tag if isinstance(self._data_ch, _TaggedChan) else 0
            if tag > self._stale_through:
                self._note(tag, item)
                return item
            # Audio, or the end, of a stream the agent cleared: not an utterance.

    def _note(self, tag: int, item: _Item) -> None:
        segment = self.segments.get(tag)
        if segment is None:
            return
        if isinstance(item, AudioSegmentEnd):
            segment["ended"] = True
        else:
            segment["frames"] += 1
            segment["samples"] += item.samples_per_channel
