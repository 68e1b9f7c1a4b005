"""`AvatarVideoGenerator`: livekit-agents' VideoGenerator over any renderer.

Speech audio goes in through `push_audio`; out comes an endless stream of
`VideoFrame, AudioFrame` pairs, one pair per 1/fps of time, plus `AudioSegmentEnd` after the
last frame of every utterance.

How a frame is made:
- *Planning* decides what frame n shows: the next window of queued speech if all of its audio
  has arrived, otherwise an idle frame. Speech is planned a few frames ahead so renders overlap;
  idle frames are planned only when frame n is due, so new speech starts on the very next frame.
- *Rendering* runs the renderer on a worker thread, never on the event loop, batching
  consecutive speech frames up to the renderer's preferred batch size. The emotion is read as
  a render starts.
- *Emitting* hands frame n out when the consumer asks for it. If its render is not ready by the
  frame's deadline on a steady 1/fps clock, the latest finished picture is repeated and counted,
  so a slow renderer costs picture freshness, never audio timing.

By default each picture goes out just before its audio, as `rtc.AVSynchronizer` expects. The
publisher instead asks for the audio a queue's length ahead (`lead_audio`): its audio source
buffers that much, so the picture owed for audio handed out then is the one due on screen now,
and renders start only about a render's time before that. A change of emotion therefore shows
on the next frames out rather than after ~100 ms of queued pictures.

Pictures leave as the renderer drew them (RGBA); the publisher puts them over the current
background as each one is sent (`avatar_runtime.pacer`), so a background change shows on the
next frame out even when a slow renderer draws ahead.

A renderer that raises, returns something that is not a picture, or hangs past
`render_timeout_s` does not stop the session: its frames get a *fallback* picture that needs no
renderer (the last idle picture it drew, composited by the publisher as usual), their audio goes
out exactly as it would have, the failure is reported (`renderer_error`, fault listeners; the
avatar's controls publish it as a participant attribute), and the renderer is tried again after
a back-off that doubles with each failure in a row. A hung render thread cannot be stopped in
Python: it is left behind, the next attempt runs on a fresh thread, and while
`max_hung_renders` of them are still stuck the renderer is not tried again.

Idle frames carry silent audio by default, so the published audio never stops. That keeps the
audio and video queues of the publisher's pacer (avatar_runtime.pacer) equally full at all
times, which is what keeps them in sync at the start of speech (README: "How audio and video
stay in sync").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from renderers import Expression, FrameRequest, Renderer
from renderers.errors import CodedError, short_reason

from .speech import SpeechQueue, SpeechWindow
from .stats import RuntimeStats
from .timeline import FrameTimeline

logger = logging.getLogger("avatar_runtime")

_CLOCK_RESET_S = 0.3
_QUEUE_LEAD_FRAMES = 2
_RESYNC_AFTER_LATE = 2
"""Frames in a row asked for past their deadline before the clock follows the consumer."""

_RENDER_WHEN_DUE = 0.3
"""With an audio lead, renders shorter than this many frames start only once their picture is
due (it may wait half a frame for them); longer ones start ahead of it."""

IDLE_AUDIO_KEY = "avatar.idle"
"""Set in `AudioFrame.userdata` of the silent audio that accompanies idle frames."""


@dataclass(frozen=True)
class RuntimeOptions:
    width: int = 512
    height: int = 512
    fps: float = 30.0
    audio_sample_rate: int = 24000
    render_wait_s: float = 0.0
    """Extra time a late render may take past the one-frame-of-queue deadline (see
    `_deadline`). Raise it only with a consumer that buffers more than the pacer."""
    max_render_ahead: int = 3
    """Speech frames planned (and rendered) ahead of the one being emitted."""
    idle_audio: bool = True
    """Emit silence with idle frames (needed for exact A/V sync through the pacer)."""
    render_timeout_s: float = 3.0
    """A render call (one batch) that takes longer is given up as hung: its frames and those
    after it show the fallback picture until the renderer is tried again. Generous next to a
    batch's usual time (milliseconds to a few hundred), so only a real hang reaches it."""
    render_retry_s: float = 1.0
    """Back-off before a failed renderer is tried again; it doubles with each failure in a row,
    up to `render_retry_max_s`."""
    render_retry_max_s: float = 30.0
    max_hung_renders: int = 2
    """Render threads left behind by hung renders that may still be stuck in the renderer.
    With this many, the renderer is not tried again until one of them returns."""


RENDER_FAILED = "render_failed"
"""`RendererFault.code`: the renderer raised, or returned something that is not the pictures
it was asked for."""
RENDER_TIMEOUT = "render_timeout"
"""`RendererFault.code`: a render took longer than `render_timeout_s`."""
_FAULT_MESSAGE_CHARS = 200


@dataclass(frozen=True)
class RendererFault:
    """Why the renderer is not drawing this session's frames now."""

    code: str
    """RENDER_FAILED or RENDER_TIMEOUT."""
    message: str
    """For people: what failed, never a class name or a traceback."""
    since: float
    """Wall-clock time (time.time()) of the first failure of this run of failures."""
    failures: int = 1
    """Failed attempts in a row (the first one and each retry that failed too)."""

    def to_dict(self) -> dict[str, Any]:
        """The fault as the avatar's state reports it: `{code, message, since}`, `since` in
        ISO 8601 UTC."""
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="milliseconds")
        return {"code": self.code, "message": self.message, "since": since.replace("+00:00", "Z")}


FaultListener = Callable[[RendererFault | None], None]


@dataclass(eq=False)
class _Plan:
    index: int
    request: FrameRequest
    speech: SpeechWindow | None
    pixels: np.ndarray | None = None
    in_flight: bool = False
    rendered: bool = False  # its render finished (pixels may still be None if it failed)
    discarded: bool = False  # its speech was cleared by an interruption
    audio_out: bool = False  # its audio has been handed out
    emitted: bool = False  # its picture has been handed out
    fallback: bool = False  # its picture is the fallback: the renderer failed or was skipped
    done: asyncio.Event = field(default_factory=asyncio.Event)


class AvatarVideoGenerator(VideoGenerator):
    def __init__(
        self,
        renderer: Renderer,
        options: RuntimeOptions | None = None,
        *,
        expression: Callable[[], Expression] | None = None,
    ) -> None:
        """`expression` returns the current Expression, read as each render starts."""
        self.options = options or RuntimeOptions()
        self._renderer = renderer
        caps = renderer.capabilities
        self._speech = SpeechQueue(
            out_rate=self.options.audio_sample_rate,
            render_rate=caps.sample_rate,
            fps=self.options.fps,
            lookbehind_s=caps.lookbehind_s,
            lookahead_s=caps.lookahead_s,
        )
        self._idle_timeline = FrameTimeline(self.options.audio_sample_rate, self.options.fps)
        self._batch_size = max(1, caps.batch_size)
        self._render_wait = self.options.render_wait_s
        self._clock_anchor: tuple[float, int] | None = None
        self._late_streak = 0
        # A callable returning the current Expression, so emotion changes reach the next frame.
        self._expression = expression or (lambda: Expression())
        self._render_thread = _RenderThread()
        self._fault: RendererFault | None = None
        self._retry_at = 0.0  # time.monotonic() when a failed renderer may be tried again
        self._hung: list[concurrent.futures.Future[Any]] = []  # abandoned, maybe still running
        self._fault_listeners: list[FaultListener] = []
        self._idle_pixels: np.ndarray | None = None  # the last idle picture the renderer drew

        self._plans: deque[_Plan] = deque()  # planned, audio not yet out, in frame order
        self._playing: deque[_Plan] = deque()  # audio out, picture not yet (audio lead only)
        self._audio_lead = 0
        self._next_index = 0
        self._emitted = -1  # the last frame whose audio is out
        self._accepted = -1  # the last frame whose audio the consumer took (audio lead only)
        self._segment_ends: deque[int] = deque()  # yield AudioSegmentEnd once this frame is out
        self._last_segment = 0
        self._planned_position = 0  # speech samples (render rate) planned so far
        self._emitted_position = 0  # speech samples (render rate) emitted so far
        self._latest_pixels: np.ndarray | None = None
        self._reset_renderer = False
        self._clears = 0  # clear_buffer calls so far
        self._work = asyncio.Event()
        self._render_task: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = RuntimeStats()

    # -- VideoGenerator ----------------------------------------------------------------------

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self._speech.end_segment()
        else:
            self._speech.push(frame)
        self._plan_ahead()

    def clear_buffer(self) -> None:
        """Drop queued speech and planned frames; the next frame out is idle."""
        self._speech.clear()
        # With an audio lead, pictures still owed for audio already out go too: the consumer
        # drops that audio along with its queue (AvatarPublisher does).
        for plan in (*self._playing, *self._plans):
            plan.discarded = True
            plan.done.set()
        self._playing.clear()
        self._plans.clear()
        self._next_index = self._emitted + 1
        self._accepted = self._emitted
        self._planned_position = self._emitted_position
        while self._segment_ends and self._segment_ends[-1] > self._emitted:
            self._segment_ends.pop()
        self._reset_renderer = True
        self._clears += 1
        self.stats.interruptions += 1

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._audio_first_stream() if self._audio_lead else self._paired_stream()

    def lead_audio(self, frames: int) -> None:
        """Hand each frame's audio out `frames` frames before its picture.

        For a consumer that buffers that much audio but sends pictures as they come (the
        publisher's FramePacer): each picture is then drawn just before it is shown, so an
        emotion change reaches the next frame out instead of waiting behind ~100 ms of queued
        pictures. 0 (the default) hands out each picture, then its audio, which is what
        `rtc.AVSynchronizer` expects. Call it before reading frames.
        """
        if frames < 0:
            raise ValueError("frames must be >= 0")
        if frames and not self.options.idle_audio:
            raise ValueError("an audio lead needs idle audio: it is what paces the pictures")
        if self._render_task is not None:
            raise RuntimeError("lead_audio must be called before the first frame is read")
        self._audio_lead = frames

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._render_task is not None:
            self._render_task.cancel()
            try:
                await self._render_task
            except asyncio.CancelledError:
                pass
        # Close the renderer on its own thread, after any render still running there.
        self._render_thread.submit(self._renderer.close)
        self._render_thread.stop()

    # -- renderer faults ---------------------------------------------------------------------

    @property
    def renderer_error(self) -> RendererFault | None:
        """Why the renderer is not drawing frames now (the fallback picture shows instead);
        None while it works."""
        return self._fault

    def add_fault_listener(self, listener: FaultListener) -> None:
        """Call `listener(fault)` on the event loop whenever `renderer_error` changes (its code
        or message; None on recovery)."""
        self._fault_listeners.append(listener)

    def remove_fault_listener(self, listener: FaultListener) -> None:
        if listener in self._fault_listeners:
            self._fault_listeners.remove(listener)

    # -- emitting ----------------------------------------------------------------------------

    def _start_rendering(self) -> None:
        if self._render_task is None:
            self._render_task = asyncio.create_task(self._render_loop(), name="avatar-render")

    async def _paired_stream(
        self,
    ) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        """Each frame's picture, then its audio."""
        self._start_rendering()
        while not self._closed:
            while self._segment_ends and self._segment_ends[0] <= self._emitted:
                self._segment_ends.popleft()
                yield AudioSegmentEnd()

            plan = self._plans[0] if self._plans else self._plan_next(allow_idle=True)
            assert plan is not None
            pixels = await self._picture_by(plan, self._deadline(plan.index))
            if plan.discarded:
                continue  # cleared while we waited for its picture: plan this frame again
            if self._plans and self._plans[0] is plan:
                self._plans.popleft()
            self._audio_out(plan)
            clears = self._clears
            yield self._video_frame(plan, pixels)
            # Cleared while its picture was being queued: its speech must not play after the
            # interruption, so its window goes out silent.
            audio = self._audio_for(plan, silent=self._clears != clears)
            if audio is not None:
                yield audio
            self._plan_ahead()

    async def _audio_first_stream(
        self,
    ) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        """Each frame's audio, and `_audio_lead` frames later its picture (see `lead_audio`).

        The consumer takes audio only as fast as it plays, so the picture owed for audio that
        went out `_audio_lead` frames ago is the one playing now. Renders start only a little
        before their picture is due (`_render_limit`), and read the expression as they start.
        """
        self._start_rendering()
        due_wait = 0.5 / self.options.fps + self._render_wait
        while not self._closed:
            while self._playing and self._playing[0].index <= self._emitted - self._audio_lead:
                plan = self._playing[0]
                pixels = await self._picture_by(plan, time.perf_counter() + due_wait)
                if plan.discarded:
                    continue  # cleared while we waited: the queue it was in is empty now
                self._playing.popleft()
                yield self._video_frame(plan, pixels)

            while self._segment_ends and self._segment_ends[0] <= self._emitted:
                self._segment_ends.popleft()
                yield AudioSegmentEnd()

            if not self._plans:
                self._plan_next(allow_idle=True)
            plan = self._plans.popleft()
            self._audio_out(plan)
            self._playing.append(plan)
            audio = self._audio_for(plan)
            assert audio is not None  # idle audio is on (lead_audio checks)
            yield audio
            # Taken: the consumer had room for it, so the picture `_audio_lead` frames back is
            # due on screen now.
            self._accepted = plan.index
            self._work.set()
            self._plan_ahead()

    def _audio_out(self, plan: _Plan) -> None:
        plan.audio_out = True
        self._emitted = plan.index
        if plan.speech is not None:
            self._emitted_position = plan.request.speech_position + plan.speech.window_length

    def _video_frame(self, plan: _Plan, pixels: np.ndarray) -> rtc.VideoFrame:
        plan.emitted = True
        self._count(plan)
        return rtc.VideoFrame(
            self.options.width,
            self.options.height,
            rtc.VideoBufferType.RGBA,
            # livekit-rtc copies this into a buffer it can address (one copy per frame,
            # whatever is passed: a view of a numpy array is not one it can).
            np.ascontiguousarray(pixels).data,
        )

    def _deadline(self, index: int) -> float:
        """When frame `index` must leave, on the emitter's clock.

        The consumer (the publisher's pacer) pulls frames as soon as its ~100 ms queues have
        room, so a frame is normally asked for a few frames before it plays. A late render may
        use that slack down to one frame of queue, never more: audio must not wait for pictures.
        """
        now = time.perf_counter()
        if self._clock_anchor is None or now > self._frame_time(index) + _CLOCK_RESET_S:
            # First frame, or the consumer stalled: restart the clock instead of catching up.
            # The consumer is about to refill its queues, so this frame plays that much later.
            self._restart_clock(now, index)
        deadline = self._frame_time(index) - 1.0 / self.options.fps + self._render_wait
        if now < deadline:
            self._late_streak = 0
            return deadline
        self._late_streak += 1
        if self._late_streak >= _RESYNC_AFTER_LATE and self._renders_keep_up():
            # Frames keep being asked for after their deadline although renders are quick: a
            # shorter stall shifted the consumer for good (audio cannot play faster to make it
            # up). Follow its pace; otherwise every later frame would repeat the last picture,
            # its render never started. A slow renderer is another matter: its frames are late
            # because of it, and repeating pictures is what keeps the audio on time.
            self._restart_clock(now, index)
            deadline = self._frame_time(index) - 1.0 / self.options.fps + self._render_wait
        return deadline

    def _renders_keep_up(self) -> bool:
        recent = self._recent_render_ms(5)
        return not recent or max(recent) < 500.0 / self.options.fps  # under half a frame

    def _recent_render_ms(self, count: int) -> list[float]:
        """The last `count` render times, without copying the whole history (per frame)."""
        return list(itertools.islice(reversed(self.stats.render_ms), count))

    def _restart_clock(self, now: float, index: int) -> None:
        self._clock_anchor = (now + _QUEUE_LEAD_FRAMES / self.options.fps, index)
        self._late_streak = 0

    def _frame_time(self, index: int) -> float:
        assert self._clock_anchor is not None
        anchor_time, anchor_index = self._clock_anchor
        return anchor_time + (index - anchor_index) / self.options.fps

    async def _picture_by(self, plan: _Plan, deadline: float) -> np.ndarray:
        """The plan's picture once rendered, waiting until `deadline` at most; past it, the
        latest picture again (counted as a repeat)."""
        if plan.pixels is None:
            if self._latest_pixels is None:
                await plan.done.wait()  # nothing to repeat yet: the very first frame waits
            else:
                timeout = deadline - time.perf_counter()
                if timeout > 0:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation that lands as the render finishes, and the frame loop then
                    # outlives its task's cancel (the publisher's close waited 5 s for it).
                    try:
                        async with asyncio.timeout(timeout):
                            await plan.done.wait()
                    except TimeoutError:
                        pass
        if plan.pixels is not None:
            return plan.pixels
        self.stats.repeated_frames += 1
        if not plan.in_flight and not plan.rendered:
            self.stats.dropped_renders += 1  # never started: skipped for being late
        if self._latest_pixels is None:
            # The renderer failed on the very first frame: show black rather than nothing.
            self._latest_pixels = self._black()
        return self._latest_pixels

    def _audio_for(self, plan: _Plan, *, silent: bool = False) -> rtc.AudioFrame | None:
        rate = self.options.audio_sample_rate
        if plan.speech is not None:
            samples = plan.speech.out_audio
            if not silent:
                return rtc.AudioFrame(samples.tobytes(), rate, 1, samples.size)
            return rtc.AudioFrame(
                bytes(2 * samples.size), rate, 1, samples.size, userdata={IDLE_AUDIO_KEY: True}
            )
        if not self.options.idle_audio:
            return None
        lo, hi = self._idle_timeline.window(plan.index)
        return rtc.AudioFrame(
            bytes(2 * (hi - lo)), rate, 1, hi - lo, userdata={IDLE_AUDIO_KEY: True}
        )

    def _count(self, plan: _Plan) -> None:
        stats = self.stats
        stats.frames += 1
        if plan.fallback:
            stats.fallback_frames += 1
        if plan.speech is None:
            stats.idle_frames += 1
            return
        stats.speech_frames += 1
        if plan.speech.frame_in_segment == 0:
            stats.segments += 1
            latency = (time.perf_counter() - plan.speech.first_audio_at) * 1000.0
            stats.first_frame_latency_ms.append(latency)

    # -- planning ----------------------------------------------------------------------------

    def _plan_ahead(self) -> None:
        while len(self._plans) < self.options.max_render_ahead:
            if self._plan_next(allow_idle=False) is None:
                break

    def _plan_next(self, *, allow_idle: bool) -> _Plan | None:
        while self._speech.pop_empty_end():
            self._segment_ends.append(self._next_index - 1)
        window = self._speech.next_window()
        if window is None and not allow_idle:
            return None
        index = self._next_index
        if window is not None:
            self._last_segment = window.segment
            request = window.frame_request(index=index, speech_position=self._planned_position)
            self._planned_position += window.window_length
            if window.last:
                self._segment_ends.append(index)
        else:
            request = FrameRequest(
                index=index,
                audio=None,
                window_offset=0,
                window_length=0,
                speech_position=self._planned_position,
                segment=self._last_segment,
            )
        plan = _Plan(index=index, request=request, speech=window)
        self._plans.append(plan)
        self._next_index += 1
        self._work.set()
        return plan

    # -- rendering ---------------------------------------------------------------------------

    async def _render_loop(self) -> None:
        while not self._closed:
            await self._work.wait()
            self._work.clear()
            while batch := self._next_batch():
                for plan in batch:
                    plan.in_flight = True
                if not self._may_render():
                    self._finish(batch, None)  # the fallback picture, no renderer needed
                    continue
                # A retry after a failure starts from a clean slate: whatever per-utterance
                # state the renderer held may be what broke.
                retrying = self._fault is not None
                reset, self._reset_renderer = self._reset_renderer or retrying, False
                # Read as the render starts, not when the frame was planned: with an audio
                # lead that is a few milliseconds before the picture is shown.
                expression = self._expression()
                requests = [replace(plan.request, expression=expression) for plan in batch]
                started = time.perf_counter()
                pictures = await self._render_guarded(requests, reset)
                if pictures is not None:
                    # Only renders that worked: a hang's seconds would make `_render_limit`
                    # start every later render far ahead of its picture.
                    elapsed_ms = (time.perf_counter() - started) * 1000.0
                    self.stats.render_ms.append(elapsed_ms / len(batch))
                    if retrying:
                        self._recovered()
                self._finish(batch, pictures)

    def _finish(self, batch: list[_Plan], pictures: Sequence[np.ndarray] | None) -> None:
        """Hand a batch its pictures; None: the renderer failed or was skipped, and the
        frames show the fallback picture (their audio is untouched)."""
        for i, plan in enumerate(batch):
            plan.in_flight = False
            plan.rendered = True
            if pictures is None:
                if not plan.discarded and not plan.emitted:
                    plan.pixels = self._latest_pixels = self._fallback_pixels()
                    plan.fallback = True
            elif plan.discarded:
                self.stats.dropped_renders += 1
            else:
                plan.pixels = self._latest_pixels = pictures[i]
                if plan.speech is None:
                    self._idle_pixels = pictures[i]
                if plan.emitted:
                    self.stats.dropped_renders += 1  # finished after its frame went out
            plan.done.set()

    def _fallback_pixels(self) -> np.ndarray:
        """What a frame shows while the renderer is failing: its last idle picture (the avatar
        at rest, composited over the background as usual), else its last picture, else black."""
        if self._idle_pixels is not None:
            return self._idle_pixels
        if self._latest_pixels is not None:
            return self._latest_pixels
        return self._black()

    def _may_render(self) -> bool:
        """Whether to call the renderer for the next batch: always while it works; after a
        failure once its back-off is over, unless too many hung renders are still stuck."""
        if self._fault is None:
            return True
        self._hung = [future for future in self._hung if not future.done()]
        if len(self._hung) >= self.options.max_hung_renders:
            return False
        return time.monotonic() >= self._retry_at

    async def _render_guarded(
        self, requests: list[FrameRequest], reset: bool
    ) -> list[np.ndarray] | None:
        """The renderer's pictures for `requests`, or None when it raised, returned something
        else or did not finish within `render_timeout_s` (recorded as the fault)."""
        future = self._render_thread.submit(self._render_batch, requests, reset)
        waiting = asyncio.wrap_future(future)
        try:
            # asyncio.wait, not a timeout around the await: a TimeoutError the renderer itself
            # raises is a failure, not a hang.
            await asyncio.wait({waiting}, timeout=self.options.render_timeout_s)
        finally:
            if not waiting.done():
                waiting.cancel()  # nobody reads what a hung render returns
        if waiting.done() and not waiting.cancelled():
            waiting.exception()  # read here, so asyncio does not log it as never retrieved
        if not future.done():
            self._abandon(future)
            self.stats.render_timeouts += 1
            self._failed(
                RENDER_TIMEOUT,
                f"renderer {self._renderer.name} did not finish a frame within "
                f"{self.options.render_timeout_s:g} s",
            )
            return None
        error = future.exception()
        if error is None:
            return future.result()
        logger.error("renderer %s failed", self._renderer.name, exc_info=(type(error), error, None))
        self._failed(RENDER_FAILED, f"renderer {self._renderer.name} failed: {_reason(error)}")
        return None

    def _abandon(self, future: concurrent.futures.Future[Any]) -> None:
        """Leave a hung render's thread behind (Python cannot stop a thread) and render on a
        fresh one from now on; when the hung call returns, its thread ends. A retry may then
        call the renderer while the hung call is still inside it: `max_hung_renders` bounds
        how many such calls there can be."""
        self._hung.append(future)
        self._render_thread.stop()
        self._render_thread = _RenderThread()
        name = self._renderer.name
        future.add_done_callback(
            lambda _: logger.warning("a hung render of renderer %s returned after all", name)
        )

    def _failed(self, code: str, message: str) -> None:
        self.stats.render_errors += 1
        previous = self._fault
        failures = previous.failures + 1 if previous is not None else 1
        delay = min(
            self.options.render_retry_s * 2 ** (failures - 1), self.options.render_retry_max_s
        )
        self._retry_at = time.monotonic() + delay
        self._fault = RendererFault(
            code,
            message,
            since=previous.since if previous is not None else time.time(),
            failures=failures,
        )
        logger.warning("%s; showing the fallback picture, trying again in %.1f s", message, delay)
        if previous is None or (previous.code, previous.message) != (code, message):
            self._notify_fault()

    def _recovered(self) -> None:
        assert self._fault is not None
        logger.info(
            "renderer %s works again after %d failure(s)",
            self._renderer.name,
            self._fault.failures,
        )
        self._fault = None
        self._notify_fault()

    def _notify_fault(self) -> None:
        for listener in list(self._fault_listeners):
            try:
                listener(self._fault)
            except Exception:
                # A listener must not stop the renders: this runs inside the render loop.
                logger.exception("renderer fault listener failed")

    def _next_batch(self) -> list[_Plan]:
        batch: list[_Plan] = []
        limit = self._render_limit()
        for plan in itertools.chain(self._playing, self._plans):
            if plan.index > limit:
                break
            if plan.rendered or plan.in_flight:
                if batch:
                    break
                continue
            batch.append(plan)
            if len(batch) >= self._batch_size or plan.speech is None:
                break
            if plan.speech.frame_in_segment == 0:
                break  # an utterance's first frame renders alone: it is the one people wait for
        return batch

    def _render_limit(self) -> float:
        """The last frame a render may start on now.

        Paired, any planned frame: its picture goes out before its audio. With an audio lead,
        only frames due within about one render's time, so that each picture is drawn as late
        as it safely can be and shows the expression of that moment.
        """
        if not self._audio_lead:
            return math.inf
        due = self._accepted - self._audio_lead  # the picture playing now
        recent = self._recent_render_ms(10)
        if not recent:
            return due + self._batch_size  # no measure yet: one frame ahead
        batch_frames = max(recent) * self._batch_size * self.options.fps / 1000.0
        # A render well inside the half frame a due picture may wait for starts when it is
        # due; a slower one starts as many frames ahead as it takes.
        ahead = 0 if batch_frames < _RENDER_WHEN_DUE else math.ceil(batch_frames)
        return due + self._batch_size - 1 + ahead

    def _render_batch(self, requests: list[FrameRequest], reset: bool) -> list[np.ndarray]:
        if reset:
            self._renderer.reset()
        pictures = self._renderer.render(requests)
        if len(pictures) != len(requests):
            raise RuntimeError(f"it returned {len(pictures)} frames for {len(requests)} requests")
        # A picture of the wrong size or type would fail later, in the publisher, where it
        # would stop the whole session's video; here it is just a failed render.
        shape = (self.options.height, self.options.width, 4)
        for picture in pictures:
            if not isinstance(picture, np.ndarray) or picture.shape != shape:
                got = picture.shape if isinstance(picture, np.ndarray) else type(picture).__name__
                raise RuntimeError(f"it returned a picture of {got}, not {shape}")
            if picture.dtype != np.uint8:
                raise RuntimeError(f"it returned {picture.dtype} pixels, not uint8")
        return list(pictures)

    def _black(self) -> np.ndarray:
        frame = np.zeros((self.options.height, self.options.width, 4), dtype=np.uint8)
        frame[..., 3] = 255
        return frame


def _reason(error: BaseException) -> str:
    """A renderer's failure in words for the avatar's state: a coded error's message, an OS
    error's own words (no path), else the exception's text; never a class name."""
    if isinstance(error, CodedError):
        text = error.message
    elif isinstance(error, OSError):
        text = short_reason(error)
    else:
        text = str(error)
    text = " ".join(text.split())
    if not text:
        return "unexpected error"
    if len(text) > _FAULT_MESSAGE_CHARS:
        text = text[: _FAULT_MESSAGE_CHARS - 3] + "..."
    return text


class _RenderThread:
    """One daemon thread that runs render calls in order.

    Not a ThreadPoolExecutor: its threads are joined when the interpreter exits, so one stuck
    in a hung renderer would keep the job's process alive forever; a daemon thread does not.
    """

    _count = itertools.count(1)

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"avatar-render-{next(self._count)}", daemon=True
        )
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((fn, args, future))
        return future

    def stop(self) -> None:
        """End the thread once the calls already submitted have run."""
        self._calls.put(None)

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args, future = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as error:  # handed to whoever waits, as an executor does
                future.set_exception(error)
            else:
                future.set_result(result)
