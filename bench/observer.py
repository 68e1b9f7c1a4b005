"""A subscriber that watches the avatar the way a viewer does, and measures it.

It joins a room as an ordinary participant, receives the avatar's audio and video, decodes the
testcard stamp of every frame and keeps the received audio's loudness with arrival times.
From those alone it reports delivered fps, size, speech energy, and the audio/video offset.
Used by the end-to-end tests and by `make bench`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import api, rtc

from renderers.testcard import Stamp, byte_to_db, read_stamp

from .lag import best_lag
from .polling import wait_until

PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
AUDIO_RATE = 24000
SILENCE_DB = -60.0


@dataclass(frozen=True)
class VideoSample:
    arrived: float
    width: int
    height: int
    stamp: Stamp | None
    luma: np.ndarray
    """A 16x16 thumbnail of the brightness of the watched region, to see the picture change."""


@dataclass(frozen=True)
class AudioSample:
    arrived: float
    samples: int
    rms_db: float


@dataclass
class RoomObserver:
    url: str
    token: str
    decode_stamps: bool = True
    region: tuple[float, float, float, float] = (0.0, 0.25, 1.0, 1.0)
    """Part of the picture (x0, y0, x1, y1 as fractions) the thumbnails watch. The default
    skips the testcard's stamp band; a face renderer's mouth is around (0.38, 0.5, 0.62, 0.7)."""
    room: rtc.Room = field(default_factory=rtc.Room)
    video: list[VideoSample] = field(default_factory=list)
    audio: list[AudioSample] = field(default_factory=list)
    video_publisher: str | None = None
    audio_publisher: str | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def connect(self) -> None:
        self.room.on("track_subscribed", self._on_track)
        await self.room.connect(self.url, self.token)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()

    async def say(self, text: str) -> None:
        """Send chat text the way a web client does (the `lk.chat` text stream)."""
        await self.room.local_participant.send_text(text, topic="lk.chat")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        await wait_until(predicate, timeout, what, interval=0.05)

    def participant(self, identity: str | None) -> rtc.RemoteParticipant | None:
        return self.room.remote_participants.get(identity or "")

    # -- receiving ---------------------------------------------------------------------------

    def _on_track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self.video_publisher = participant.identity
            self._tasks.append(asyncio.create_task(self._read_video(track)))
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            self.audio_publisher = participant.identity
            self._tasks.append(asyncio.create_task(self._read_audio(track)))

    async def _read_video(self, track: rtc.Track) -> None:
        async for event in rtc.VideoStream(track):
            arrived = time.perf_counter()
            frame = event.frame.convert(rtc.VideoBufferType.RGBA)
            pixels = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)
            stamp = read_stamp(pixels) if self.decode_stamps else None
            self.video.append(
                VideoSample(
                    arrived, frame.width, frame.height, stamp, thumbnail(pixels, self.region)
                )
            )

    async def _read_audio(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=AUDIO_RATE, num_channels=1):
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            rms = float(np.sqrt(np.mean(samples**2))) / 32768.0 if samples.size else 0.0
            self.audio.append(
                AudioSample(time.perf_counter(), samples.size, 20 * np.log10(max(rms, 1e-6)))
            )

    # -- measuring ---------------------------------------------------------------------------

    def fps(self, start: float, end: float) -> float:
        times = [v.arrived for v in self.video if start <= v.arrived <= end]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def speech_frames(self) -> list[VideoSample]:
        return [v for v in self.video if v.stamp is not None and v.stamp.speech]

    def segment_frames(self, segment: int) -> list[VideoSample]:
        """The speech frames of one utterance (numbered from 1 by the avatar)."""
        return [v for v in self.speech_frames() if v.stamp.segment == segment]  # type: ignore[union-attr]

    def last_segment(self) -> int:
        """Number of the latest utterance; idle frames carry it too, so it is known even when
        the utterance ended before we subscribed."""
        stamps = [v.stamp for v in self.video if v.stamp is not None]
        return stamps[-1].segment if stamps else 0

    def idle_after_speech(self, frames: int = 10) -> bool:
        """The last `frames` frames are idle and at least one utterance has been played."""
        stamps = [v.stamp for v in self.video[-frames:] if v.stamp is not None]
        return (
            len(stamps) == frames and not any(s.speech for s in stamps) and stamps[-1].segment >= 1
        )

    async def wait_until_spoken(self, segment: int, timeout: float = 60.0) -> None:
        """Wait until utterance `segment` (or a later one) has played and the avatar is idle."""
        await self.wait_for(
            lambda: self.last_segment() >= segment and self.idle_after_speech(),
            timeout,
            f"utterance {segment} to be spoken",
        )

    def speech_spans(
        self, threshold_db: float = -40.0, gap_s: float = 0.6
    ) -> list[tuple[float, float]]:
        """Stretches of loud received audio (pauses shorter than `gap_s` bridged): when the
        avatar was heard speaking, for renderers whose frames carry no stamp."""
        spans: list[list[float]] = []
        for sample in self.loud_audio(threshold_db):
            if spans and sample.arrived - spans[-1][1] <= gap_s:
                spans[-1][1] = sample.arrived
            else:
                spans.append([sample.arrived, sample.arrived])
        return [(start, end) for start, end in spans]

    def loud_audio(self, threshold_db: float = -40.0) -> list[AudioSample]:
        return [a for a in self.audio if a.rms_db > threshold_db]

    def av_offset_ms(self, max_lag_ms: float = 300.0) -> float:
        return estimate_av_offset_ms(self.video, self.audio, max_lag_ms=max_lag_ms)


def thumbnail(pixels: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = region
    body = pixels[
        int(y0 * h) : max(int(y1 * h), int(y0 * h) + 1),
        int(x0 * w) : max(int(x1 * w), int(x0 * w) + 1),
        1,
    ]
    rows = np.linspace(0, body.shape[0] - 1, 16).astype(int)
    cols = np.linspace(0, body.shape[1] - 1, 16).astype(int)
    return body[np.ix_(rows, cols)].astype(np.float32)


def picture_change(frames: list[VideoSample], reference: list[VideoSample]) -> float:
    """Mean brightness difference of `frames` from the average picture of `reference`."""
    base = np.mean([f.luma for f in reference], axis=0)
    return float(np.mean([np.abs(f.luma - base).mean() for f in frames]))


@dataclass
class SpokenTurn:
    """What a viewer received around one sentence: the frames while the voice was heard and
    the idle frames after it."""

    start: float
    end: float
    speaking: list[VideoSample]
    idle: list[VideoSample]


async def speak_and_watch(
    observer: RoomObserver, text: str, *, greeting_timeout: float = 60.0
) -> SpokenTurn:
    """Wait for the greeting to end, have the agent say `text` (over two seconds of speech),
    wait until it has been heard to the end, and split the received video around it."""
    await observer.wait_for(lambda: quiet_for(observer, 1.0), greeting_timeout, "greeting to end")
    said_from = len(observer.video)
    await observer.say(text)
    await observer.wait_for(
        lambda: any(end - start > 2.0 for start, end in _spans_after(observer, said_from)),
        60,
        "the sentence to be heard",
    )
    await observer.wait_for(lambda: quiet_for(observer, 1.0), 30, "the sentence to end")
    start, end = max(_spans_after(observer, said_from), key=lambda span: span[1] - span[0])
    return SpokenTurn(
        start=start,
        end=end,
        speaking=[v for v in observer.video if start <= v.arrived <= end],
        idle=[v for v in observer.video if v.arrived > end + 0.6],
    )


def quiet_for(observer: RoomObserver, seconds: float) -> bool:
    """True when speech has been heard and the last `seconds` of received audio are quiet."""
    if not observer.audio or observer.audio[-1].arrived - observer.audio[0].arrived < seconds:
        return False
    spans = observer.speech_spans()
    last_loud = spans[-1][1] if spans else 0.0
    return observer.audio[-1].arrived - last_loud >= seconds and bool(spans)


def _spans_after(observer: RoomObserver, video_index: int) -> list[tuple[float, float]]:
    since = observer.video[video_index].arrived if video_index < len(observer.video) else 0.0
    return [(s, e) for s, e in observer.speech_spans() if s >= since]


def estimate_av_offset_ms(
    video: list[VideoSample], audio: list[AudioSample], *, max_lag_ms: float = 300.0
) -> float:
    """How much later each frame arrived than the audio it belongs to (negative: earlier).

    Every stamped frame carries the loudness of its own 1/fps of audio. For each candidate lag
    we compute the loudness of the received audio in the window the frame should cover,
    [arrival - lag, arrival - lag + 1/fps), and keep the lag whose loudness best matches the
    stamps (Pearson correlation over every frame, speech and silence alike).
    """
    frames = [v for v in video if v.stamp is not None]
    if len(frames) < 30 or len(audio) < 30:
        raise ValueError("not enough stamped video or audio to measure an offset")
    frame_times = np.array([v.arrived for v in frames])
    frame_db = np.clip([byte_to_db(v.stamp.level) for v in frames], SILENCE_DB, 0.0)  # type: ignore[union-attr]
    period = float(np.median(np.diff(frame_times)))

    # A chunk's samples end at its arrival time.
    chunk_end = np.array([a.arrived for a in audio])
    chunk_len = np.array([a.samples / AUDIO_RATE for a in audio])
    lag_ms, score = best_lag(
        frame_times,
        frame_db,
        chunk_end - chunk_len,
        np.array([a.rms_db for a in audio]),
        period=period,
        max_lag_ms=max_lag_ms,
    )
    if score < 0.5:
        raise ValueError(f"audio and video loudness do not match (best correlation {score:.2f})")
    return lag_ms


def observer_token(
    api_key: str, api_secret: str, room: str, identity: str, agent_name: str | None
) -> str:
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if agent_name:
        token = token.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent_name)])
        )
    return token.to_jwt()
