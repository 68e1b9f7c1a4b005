"""`AvatarPublisher`: puts a generator's frames on a room's tracks and keeps the agent informed.

It plays the role of livekit-agents' `AvatarRunner` (same AudioReceiver contract, the same
pacing as `rtc.AVSynchronizer`, see `avatar_runtime.pacer`), with four differences that matter
for a real avatar:
- idle frames carry silent audio, and only speech audio counts as playback;
- an interruption also empties the synchronizer's queues, so the avatar stops at once instead
  of finishing ~100 ms of queued speech;
- "playback finished" is reported when the last audio has actually been played, not when it
  was queued, and the runtime's counters are published as a participant attribute;
- the background is composited as each picture is sent, not when it was queued, so a change
  shows ~100 ms sooner.

`speaking` follows the same playback (true from an utterance's first speech audio until its last
audio has played or it was interrupted); speaking listeners hear every change of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from livekit import rtc
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd

from .compositor import BackgroundStage, Compositor
from .generator import IDLE_AUDIO_KEY, AvatarVideoGenerator
from .pacer import FramePacer

logger = logging.getLogger("avatar_runtime")

STATS_ATTRIBUTE = "avatar.stats"
_CLOSE_TIMEOUT_S = 5.0
AUDIO_TRACK_NAME = "avatar_audio"
VIDEO_TRACK_NAME = "avatar_video"
AV_STREAM = "avatar"
"""The stream both tracks are published in. Receivers put the tracks of one stream in one
MediaStream (the SDP's msid) and lip-sync only tracks of the same MediaStream, using the RTCP
sender reports; without it each track plays out after its own jitter buffer and, with audio's
buffer the deeper one, the lips lead the voice. Named explicitly rather than left to
livekit-server's default (which groups by source, camera with microphone), so the pair stays
one stream whatever else the participant publishes. livekit-server gives subscribers the
shared stream id only in rooms created with `sync_streams` (CreateRoomRequest, a token's
RoomConfiguration, or `room.sync_streams` in its config); elsewhere every track is a stream
of its own and nothing a publisher does makes a receiver lip-sync them."""


class AvatarPublisher:
    def __init__(
        self,
        room: rtc.Room,
        *,
        audio_recv: AudioReceiver,
        video_gen: AvatarVideoGenerator,
        queue_size_ms: int = 100,
        stats_interval_s: float = 2.0,
        compositor: Compositor | None = None,
        background: Callable[[], str] | None = None,
    ) -> None:
        """With a `compositor`, every picture goes out over the background spec `background()`
        returns at that moment (default `original`)."""
        self._room = room
        self._audio_recv = audio_recv
        self._video_gen = video_gen
        options = video_gen.options
        self._audio_source = rtc.AudioSource(
            options.audio_sample_rate, 1, queue_size_ms=queue_size_ms
        )
        self._video_source = rtc.VideoSource(options.width, options.height)
        self._background_stage = (
            BackgroundStage(compositor, background or (lambda: "original"))
            if compositor is not None
            else None
        )
        self._pacer = FramePacer(
            audio_source=self._audio_source,
            video_source=self._video_source,
            fps=options.fps,
            queue_size_ms=queue_size_ms,
            finish=self._background_stage.finish_frame if self._background_stage else None,
            on_arrival=True,
        )
        # The audio source holds this many frames of audio; with the generator's audio that
        # far ahead of its pictures, each picture is drawn just before it is sent.
        video_gen.lead_audio(self._pacer.queue_frames)
        self._stats_interval = stats_interval_s
        self._playing = False
        self._position = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main_tasks: list[asyncio.Task[None]] = []
        self._pending_finish: tuple[asyncio.TimerHandle, float] | None = None
        self._clears = 0
        self._speaking = False
        self._speaking_listeners: list[Callable[[bool], None]] = []
        self.audio_publication: rtc.LocalTrackPublication | None = None
        self.video_publication: rtc.LocalTrackPublication | None = None
        self._tracks_published = asyncio.Event()

    @property
    def pacer(self) -> FramePacer:
        return self._pacer

    @property
    def speaking(self) -> bool:
        """True from an utterance's first speech audio until its last audio has been played
        (or it was interrupted); back-to-back utterances keep it true."""
        return self._speaking

    def add_speaking_listener(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(speaking)` on the event loop whenever `speaking` changes."""
        self._speaking_listeners.append(listener)

    def remove_speaking_listener(self, listener: Callable[[bool], None]) -> None:
        if listener in self._speaking_listeners:
            self._speaking_listeners.remove(listener)

    def interrupt(self) -> None:
        """Stop speaking at once, exactly as a `clear_buffer` from the agent would: queued
        speech is dropped and the agent is told the playback was interrupted."""
        self._on_clear_buffer()

    async def start(self) -> None:
        await self._audio_recv.start()
        self._audio_recv.on("clear_buffer", self._on_clear_buffer)
        self._main_tasks = [
            asyncio.create_task(self._read_audio(), name="avatar-read-audio"),
            asyncio.create_task(self._forward_frames(), name="avatar-forward"),
            asyncio.create_task(self._publish_stats(), name="avatar-stats"),
        ]

    async def wait_for_tracks(self, timeout: float) -> bool:
        """Wait until both tracks are published (the first picture triggers it); False if that
        took longer than `timeout`, or frame forwarding stopped first. livekit-rtc (1.1.21) can
        segfault when the server closes the room while a video `publish_track` is still in
        flight (a use-after-free inside its libwebrtc, see docs/livekit-rtc-notes.md), so
        whoever announces the avatar (its state attributes and RPCs) waits for this first:
        nobody closes a room on an avatar they have not seen yet."""
        published = asyncio.ensure_future(self._tracks_published.wait())
        # Also stop waiting if frame forwarding (which publishes them) has ended.
        await asyncio.wait(
            {published, *self._main_tasks[1:2]},
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        published.cancel()
        return self._tracks_published.is_set()

    async def wait_for_complete(self) -> None:
        await asyncio.gather(*self._main_tasks[:2])

    async def aclose(self) -> None:
        if self._pending_finish is not None:
            self._pending_finish[0].cancel()
        tasks = [*self._main_tasks, *self._tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a job that cannot shut down would hold its process and room forever.
            _, stuck = await asyncio.wait(tasks, timeout=_CLOSE_TIMEOUT_S)
            if stuck:
                logger.warning("avatar tasks did not stop: %s", [t.get_name() for t in stuck])
        await self._unpublish_tracks()
        await self._audio_recv.aclose()
        await self._video_gen.aclose()
        await self._pacer.aclose()
        await self._audio_source.aclose()
        await self._video_source.aclose()

    # -- tracks ------------------------------------------------------------------------------

    async def _publish_tracks(self) -> None:
        local = self._room.local_participant
        audio_track = rtc.LocalAudioTrack.create_audio_track(AUDIO_TRACK_NAME, self._audio_source)
        self.audio_publication = await local.publish_track(
            audio_track,
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, stream=AV_STREAM),
        )
        video_track = rtc.LocalVideoTrack.create_video_track(VIDEO_TRACK_NAME, self._video_source)
        self.video_publication = await local.publish_track(video_track, self._video_options())
        self._tracks_published.set()

    async def _unpublish_tracks(self) -> None:
        """Take the avatar's tracks off the room, so a participant that stays (the agent,
        in-process) stops showing a frozen picture; nothing to do once the room is gone."""
        publications = [p for p in (self.audio_publication, self.video_publication) if p]
        self.audio_publication = self.video_publication = None
        if not publications or not self._room.isconnected():
            return
        local = self._room.local_participant
        for publication in publications:
            try:
                await asyncio.wait_for(local.unpublish_track(publication.sid), _CLOSE_TIMEOUT_S)
            except Exception:
                logger.debug("could not unpublish %s", publication.name, exc_info=True)

    def _video_options(self) -> rtc.TrackPublishOptions:
        """One full-size layer: an avatar is the main picture on every screen that shows it,
        and simulcast's smaller layers would make subscribers see a different size."""
        options = self._video_gen.options
        pixels_per_second = options.width * options.height * options.fps
        return rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_CAMERA,
            stream=AV_STREAM,
            simulcast=False,
            video_encoding=rtc.VideoEncoding(
                # ~0.2 bits per pixel: talking heads are mostly static and compress well.
                max_bitrate=int(min(4_000_000, max(600_000, pixels_per_second * 0.2))),
                max_framerate=options.fps,
            ),
        )

    # -- data paths --------------------------------------------------------------------------

    async def _read_audio(self) -> None:
        async for frame in self._audio_recv:
            await self._video_gen.push_audio(frame)

    async def _forward_frames(self) -> None:
        try:
            async for item in self._video_gen:
                if isinstance(item, AudioSegmentEnd):
                    self._on_segment_end()
                    continue
                if self.video_publication is None:
                    # Publish only once the first picture exists: no empty track on the page.
                    await self._publish_tracks()
                clears = self._clears
                await self._pacer.push(item)
                if (
                    isinstance(item, rtc.AudioFrame)
                    and not (item.userdata or {}).get(IDLE_AUDIO_KEY)
                    and clears == self._clears  # not interrupted while it was being queued
                ):
                    self._on_speech_audio(item)
        except Exception:
            logger.exception("avatar frame forwarding stopped")
            raise

    def _on_speech_audio(self, frame: rtc.AudioFrame) -> None:
        if not self._playing:
            self._playing = True
            self._position = 0.0
            self._notify(self._audio_recv.notify_playback_started())
            self._update_speaking()
        self._position += frame.duration

    def _on_segment_end(self) -> None:
        if not self._playing:
            return  # an utterance with no audio, or one already reported as interrupted
        self._report_pending_finish()  # keep reports in utterance order
        position = self._position
        self._playing = False
        self._position = 0.0
        # The last audio is still in the source's queue: report it once it has been played.
        delay = self._audio_source.queued_duration
        timer = asyncio.get_running_loop().call_later(delay, self._report_pending_finish)
        self._pending_finish = (timer, position)

    def _report_pending_finish(self, *, interrupted: bool = False) -> None:
        if self._pending_finish is None:
            return
        timer, position = self._pending_finish
        self._pending_finish = None
        timer.cancel()
        self._notify(
            self._audio_recv.notify_playback_finished(
                playback_position=position, interrupted=interrupted
            )
        )
        self._update_speaking()

    def _on_clear_buffer(self) -> None:
        self._clears += 1
        self._video_gen.clear_buffer()
        # An utterance fully queued but not yet played out was cut short too.
        self._report_pending_finish(interrupted=True)
        playing, position = self._playing, self._position
        self._playing = False
        self._position = 0.0
        self._update_speaking()

        async def clear() -> None:
            await self._pacer.clear_queue()
            if playing:
                await self._await(
                    self._audio_recv.notify_playback_finished(
                        playback_position=position, interrupted=True
                    )
                )

        self._spawn(clear())

    # -- helpers -----------------------------------------------------------------------------

    def _update_speaking(self) -> None:
        speaking = self._playing or self._pending_finish is not None
        if speaking == self._speaking:
            return
        self._speaking = speaking
        for listener in list(self._speaking_listeners):
            try:
                listener(speaking)
            except Exception:
                # A listener must not stop the frames: this runs inside the forwarding loop.
                logger.exception("avatar speaking listener failed")

    async def _publish_stats(self) -> None:
        while True:
            await asyncio.sleep(self._stats_interval)
            if not self._room.isconnected():
                continue
            snapshot = self._video_gen.stats.snapshot()
            snapshot["actual_fps"] = round(self._pacer.actual_fps, 2)
            try:
                await self._room.local_participant.set_attributes(
                    {STATS_ATTRIBUTE: json.dumps(snapshot, separators=(",", ":"))}
                )
            except Exception:
                logger.debug("could not publish avatar stats", exc_info=True)

    def _notify(self, result: None | Coroutine[Any, Any, None]) -> None:
        if asyncio.iscoroutine(result):
            self._spawn(result)

    @staticmethod
    async def _await(result: None | Coroutine[Any, Any, None]) -> None:
        if asyncio.iscoroutine(result):
            await result

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
