"""`FramePacer`: plays paired audio and video out in real time, finishing each picture just
before its turn.

It does what `rtc.AVSynchronizer` does, with the same queues and the same clock: audio goes
straight into the `AudioSource` (whose ~100 ms buffer paces the producer in real time), video
waits in a queue of the same length and leaves on a steady 1/fps clock, so both sides stay the
same distance behind the producer and therefore in sync. The difference is the `finish` step,
run on each picture as its slot comes up rather than when it was queued. The publisher
composites the background there, so a background change shows on the next frame out instead of
after the ~100 ms of frames already queued.

Finishing takes time (a few milliseconds), so it starts that much before the slot:
the pacer keeps a running estimate of the cost and begins early by it, and the frame still
leaves on its slot.

The publisher uses it the other way (`on_arrival`): its generator hands each picture out when
it is due, a queue's length after its audio, so pictures are finished and sent as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from livekit import rtc

logger = logging.getLogger("avatar_runtime")

MAX_BEHIND_S = 0.3
"""A frame this late restarts the clock instead of being rushed out (as AVSynchronizer)."""
_COST_WEIGHT = 0.2  # of the newest sample in the running finishing-cost estimate

FinishFrame = Callable[[rtc.VideoFrame], Awaitable[rtc.VideoFrame]]


class CostEstimate:
    """A running estimate of how long a step before a frame's slot takes (finishing it here,
    encoding it for a WebRTC peer in control_api/streaming/webrtc.py), to start the step that
    much early: it leans on the newest cost, never drops below half of it, and never passes
    `limit`."""

    def __init__(self, limit: float) -> None:
        self.value = 0.0
        self._limit = limit

    def add(self, cost: float) -> float:
        estimate = (1.0 - _COST_WEIGHT) * self.value + _COST_WEIGHT * cost
        self.value = min(max(estimate, cost * 0.5), self._limit)
        return self.value


class FramePacer:
    def __init__(
        self,
        *,
        audio_source: rtc.AudioSource,
        video_source: rtc.VideoSource,
        fps: float,
        queue_size_ms: float = 100,
        finish: FinishFrame | None = None,
        on_arrival: bool = False,
    ) -> None:
        """`on_arrival`: pictures come already paced, each when it is due (a generator that
        leads its audio, see AvatarVideoGenerator.lead_audio), so each is finished and sent
        as it arrives, with no clock of its own. A clock would turn a burst (three pictures
        due at once after an interruption empties the audio buffer) into a standing delay of
        those frames behind their audio for the rest of the session. Leave it off for a
        producer that fills the queue ahead, as AVSynchronizer's does."""
        self._audio_source = audio_source
        self._video_source = video_source
        self._interval = 1.0 / fps
        self.queue_frames = max(1, int(fps * queue_size_ms / 1000))
        """Frames of audio the source buffers, and at most as many pictures waiting here."""
        self._queue: asyncio.Queue[rtc.VideoFrame] = asyncio.Queue(maxsize=self.queue_frames)
        self._finish = finish
        self._on_arrival = on_arrival
        self._finish_cost = CostEstimate(limit=self._interval)
        self._next_slot: float | None = None
        self._sent: deque[float] = deque(maxlen=max(2, int(fps)))
        self._task = asyncio.create_task(self._play_video(), name="avatar-pacer")

    async def push(self, frame: rtc.VideoFrame | rtc.AudioFrame) -> None:
        """Queue a picture, or hand audio to the source (waiting while its buffer is full)."""
        if isinstance(frame, rtc.AudioFrame):
            await self._audio_source.capture_frame(frame)
        else:
            await self._queue.put(frame)

    async def clear_queue(self) -> None:
        """Drop the queued audio and pictures (an interruption)."""
        self._audio_source.clear_queue()
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()

    @property
    def queued_frames(self) -> int:
        """Pictures waiting for their slot."""
        return self._queue.qsize()

    @property
    def actual_fps(self) -> float:
        """Pictures sent per second, over the last second."""
        if len(self._sent) < 2:
            return 0.0
        return (len(self._sent) - 1) / (self._sent[-1] - self._sent[0])

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _play_video(self) -> None:
        while True:
            frame = await self._queue.get()
            try:
                if self._on_arrival:
                    if self._finish is not None:
                        frame = await self._finished(frame)
                    self._send(frame)
                    continue
                now = time.perf_counter()
                if self._next_slot is None or now - self._next_slot > MAX_BEHIND_S:
                    self._next_slot = now
                if self._finish is not None:
                    await _sleep_until(self._next_slot - self._finish_cost.value)
                    frame = await self._finished(frame)
                await _sleep_until(self._next_slot)
                self._send(frame)
                self._next_slot += self._interval
            finally:
                self._queue.task_done()

    def _send(self, frame: rtc.VideoFrame) -> None:
        self._video_source.capture_frame(frame)
        self._sent.append(time.perf_counter())

    async def _finished(self, frame: rtc.VideoFrame) -> rtc.VideoFrame:
        assert self._finish is not None
        started = time.perf_counter()
        try:
            finished = await self._finish(frame)
        except Exception:
            # The finishing step handles its own failures; this only keeps pictures flowing.
            logger.exception("finishing a frame failed; sending it as it is")
            return frame
        self._finish_cost.add(time.perf_counter() - started)
        return finished


async def _sleep_until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
