"""An independent viewer: what a person watching the avatar sees and hears, measured from the
received media alone.

It joins a room with the livekit Python SDK only (`livekit.rtc`), subscribes to the avatar's
audio and video, and notes when each decoded picture and each 10 ms of audio reached it
(`time.perf_counter`). It knows nothing of the testcard's stamps, the bench's observer or the
avatar's own statistics: lip sync is judged the way a person judges it, by when the mouth
moves against when the voice is loud.

- Mouth motion: the mouth is found once with MediaPipe's face landmarks (the bundled models
  that `renderers.vision` runs), then every picture is reduced to how much of that mouth box is
  dark (an open mouth shows its dark inside; closed lips and skin are bright).
- Loudness: the RMS of each received 10 ms of audio, on a playout clock rebuilt from the
  sample count (audio is played at a steady rate; event-loop delays only ever add to an
  arrival time, so the earliest arrivals around a chunk pin its clock).
- Lag: the shift of the loudness envelope that correlates best with the mouth signal
  (Pearson, 1 ms steps), per utterance and over a whole session. Positive: the picture arrives
  later than the sound it belongs to (lips trail the voice); negative: lips lead.

The receiver's own statistics (`RemoteTrack.get_stats()`: jitter-buffer delay and target per
track, RTCP sender reports seen, the stream a track belongs to) are sampled every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from .lag import best_lag
from .polling import wait_until

AUDIO_RATE = 48000
SILENCE_DB = -60.0
SPEECH_DB = -40.0


@dataclass(frozen=True)
class AudioChunk:
    arrived: float
    samples: int
    rms_db: float


@dataclass(frozen=True)
class Picture:
    arrived: float
    timestamp_us: int
    shown: float
    """When the receiver means the picture to be shown: libwebrtc's render time, which a
    received frame carries as its timestamp (microseconds of the monotonic clock that
    `time.perf_counter` also reads on Linux); the arrival time when it carries none. It does
    not move when this process is late reading its queue on a busy machine."""
    mouth_dark: float | None
    """Fraction of the mouth box darker than the dark threshold (None before the mouth was
    found)."""


@dataclass(frozen=True)
class MouthBox:
    x0: int
    y0: int
    x1: int
    y1: int
    dark_threshold: float
    """Luma below which a pixel counts as the open mouth's inside: half-way between the dark
    cavity and the lips/skin of the closed mouth, from the picture the box was found in."""


@dataclass
class Viewer:
    url: str
    token: str
    publisher: str | None = None
    """Identity whose tracks to watch; by default the first participant publishing video."""
    stats_interval_s: float = 1.0
    room: rtc.Room = field(default_factory=rtc.Room)
    audio: list[AudioChunk] = field(default_factory=list)
    video: list[Picture] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    mouth: MouthBox | None = None
    first_video_at: float | None = None
    first_audio_at: float | None = None
    audio_track: rtc.RemoteAudioTrack | None = None
    video_track: rtc.RemoteVideoTrack | None = None
    publications: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)
    """When each room event was first seen (perf_counter): connected, participant_connected,
    track_published, track_subscribed, plus first_video and first_audio."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _locating: bool = False

    async def connect(self) -> None:
        self.room.on("track_subscribed", self._on_track)
        for name in ("participant_connected", "track_published", "track_subscribed"):
            self.room.on(name, self._noter(name))
        await self.room.connect(self.url, self.token)
        self.events.setdefault("connected", time.perf_counter())
        self._tasks.append(asyncio.create_task(self._sample_stats(), name="viewer-stats"))

    def _noter(self, name: str) -> Callable[..., None]:
        def note(*_: Any) -> None:
            self.events.setdefault(name, time.perf_counter())

        return note

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        await wait_until(predicate, timeout, what, interval=0.02)

    async def say(self, text: str) -> float:
        """Send chat text as the web page does; returns when it was sent."""
        sent = time.perf_counter()
        await self.room.local_participant.send_text(text, topic="lk.chat")
        return sent

    # -- receiving ---------------------------------------------------------------------------

    def _on_track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if self.publisher is not None and participant.identity != self.publisher:
            return
        self.publications[publication.sid] = {
            "kind": "video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio",
            "name": publication.name,
            "source": int(publication.source),
            "participant": participant.identity,
        }
        if track.kind == rtc.TrackKind.KIND_VIDEO and self.video_track is None:
            assert isinstance(track, rtc.RemoteVideoTrack)
            self.publisher = participant.identity
            self.video_track = track
            self._tasks.append(asyncio.create_task(self._read_video(track)))
        elif track.kind == rtc.TrackKind.KIND_AUDIO and self.audio_track is None:
            assert isinstance(track, rtc.RemoteAudioTrack)
            self.audio_track = track
            self._tasks.append(asyncio.create_task(self._read_audio(track)))

    async def _read_video(self, track: rtc.RemoteVideoTrack) -> None:
        async for event in rtc.VideoStream(track, format=rtc.VideoBufferType.I420):
            arrived = time.perf_counter()
            if self.first_video_at is None:
                self.first_video_at = self.events["first_video"] = arrived
            frame = event.frame
            luma = np.frombuffer(frame.data, dtype=np.uint8, count=frame.width * frame.height)
            luma = luma.reshape(frame.height, frame.width)
            box = self.mouth
            dark = None
            if box is not None:
                region = luma[box.y0 : box.y1, box.x0 : box.x1]
                dark = float(np.count_nonzero(region < box.dark_threshold)) / region.size
            elif not self._locating and len(self.video) >= 5:
                # Off the loop: finding the face takes tens of milliseconds.
                self._locating = True
                rgb = np.asarray(frame.convert(rtc.VideoBufferType.RGB24).data, dtype=np.uint8)
                rgb = rgb.reshape(frame.height, frame.width, 3).copy()
                self._tasks.append(asyncio.create_task(self._locate(rgb)))
            render_at = event.timestamp_us / 1e6
            shown = render_at if abs(render_at - arrived) < 1.0 else arrived
            self.video.append(Picture(arrived, event.timestamp_us, shown, dark))

    async def _locate(self, rgb: np.ndarray) -> None:
        try:
            self.mouth = await asyncio.to_thread(locate_mouth, rgb)
        finally:
            if self.mouth is None:
                await asyncio.sleep(0.5)  # no face in this picture: try a later one
                self._locating = False

    async def _read_audio(self, track: rtc.RemoteAudioTrack) -> None:
        stream = rtc.AudioStream(track, sample_rate=AUDIO_RATE, num_channels=1)
        async for event in stream:
            arrived = time.perf_counter()
            if self.first_audio_at is None:
                self.first_audio_at = self.events["first_audio"] = arrived
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            rms = float(np.sqrt(np.mean(samples**2))) / 32768.0 if samples.size else 0.0
            self.audio.append(AudioChunk(arrived, samples.size, 20 * np.log10(max(rms, 1e-6))))

    async def _sample_stats(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            for kind, track in (("audio", self.audio_track), ("video", self.video_track)):
                if track is None:
                    continue
                with contextlib.suppress(Exception):  # a track going away mid-call
                    sample = receiver_stats(await track.get_stats())
                    sample.update(kind=kind, at=time.perf_counter())
                    self.stats.append(sample)

    # -- what was received -------------------------------------------------------------------

    def speech_spans(self, gap_s: float = 0.6, min_s: float = 0.8) -> list[tuple[float, float]]:
        """Stretches of loud received audio (pauses under `gap_s` bridged), on arrival time."""
        spans: list[list[float]] = []
        for chunk in self.audio:
            if chunk.rms_db <= SPEECH_DB:
                continue
            if spans and chunk.arrived - spans[-1][1] <= gap_s:
                spans[-1][1] = chunk.arrived
            else:
                spans.append([chunk.arrived, chunk.arrived])
        return [(a, b) for a, b in spans if b - a >= min_s]

    def quiet_for(self, seconds: float) -> bool:
        """Speech has been heard and the last `seconds` of received audio were quiet."""
        if not self.audio:
            return False
        last_loud = max((c.arrived for c in self.audio if c.rms_db > SPEECH_DB), default=None)
        return last_loud is not None and self.audio[-1].arrived - last_loud >= seconds

    def first_loud_after(self, since: float) -> float | None:
        for chunk in self.audio:
            if chunk.arrived >= since and chunk.rms_db > SPEECH_DB:
                return chunk.arrived
        return None

    def lag(
        self, start: float, end: float, max_lag_ms: float = 250.0, clock: str = "shown"
    ) -> LagEstimate:
        """Best lag of the pictures behind the sound over pictures shown in [start, end]."""
        pictures = [p for p in self.video if start <= p.shown <= end and p.mouth_dark is not None]
        return estimate_lag(pictures, self.audio, max_lag_ms=max_lag_ms, clock=clock)

    def jitter_buffer_ms(self, kind: str, start: float, end: float) -> list[float]:
        """Per-interval mean jitter-buffer delay of one track (the delay added to media
        emitted in each stats interval)."""
        samples = [s for s in self.stats if s["kind"] == kind and start <= s["at"] <= end]
        out = []
        for before, after in zip(samples, samples[1:], strict=False):
            count = after["jitter_buffer_emitted_count"] - before["jitter_buffer_emitted_count"]
            if count > 0:
                delay = after["jitter_buffer_delay"] - before["jitter_buffer_delay"]
                out.append(1000.0 * delay / count)
        return out


def receiver_stats(stats: Sequence[Any]) -> dict[str, Any]:
    """The receiver-side numbers of one track from `get_stats()`: its inbound RTP stream
    (jitter buffer), the RTCP sender reports received for it (remote-outbound-rtp), and the
    stream (MediaStream id, i.e. the sync group) if the stack reports one."""
    out: dict[str, Any] = {
        "jitter_buffer_delay": 0.0,
        "jitter_buffer_emitted_count": 0,
        "jitter_buffer_target_delay": 0.0,
        "sender_reports": 0,
        "sender_report_remote_timestamp": None,
        "track_identifier": None,
        "streams": [],
    }
    for item in stats:
        which = item.WhichOneof("stats")
        if which == "inbound_rtp":
            inbound = item.inbound_rtp.inbound
            out["jitter_buffer_delay"] = inbound.jitter_buffer_delay
            out["jitter_buffer_emitted_count"] = inbound.jitter_buffer_emitted_count
            out["jitter_buffer_target_delay"] = inbound.jitter_buffer_target_delay
            out["track_identifier"] = inbound.track_identifier
        elif which == "remote_outbound_rtp":
            remote = item.remote_outbound_rtp.remote_outbound
            out["sender_reports"] = remote.reports_sent
            out["sender_report_remote_timestamp"] = remote.remote_timestamp
        elif which == "stream":
            out["streams"].append(item.stream.stream.stream_identifier)
    return out


# -- finding the mouth -----------------------------------------------------------------------

_LIP_POINTS = (61, 291, 0, 17, 13, 14, 78, 308)
"""MediaPipe face-mesh points: mouth corners (61, 291), outer upper/lower lip (0, 17), inner
lips (13, 14), inner corners (78, 308)."""


def locate_mouth(rgb: np.ndarray) -> MouthBox | None:
    """The mouth box of the largest face in `rgb`, or None when there is no face. The box is
    the lips' outline grown by half its height, more below (the jaw drops when it opens)."""
    from renderers.base import RendererError
    from renderers.vision.face_mesh import face_mesh

    try:
        mesh = face_mesh(rgb)
    except RendererError:
        return None
    if mesh.presence < 0.5:
        return None
    lips = mesh.points[list(_LIP_POINTS), :2]
    x0, y0 = lips.min(axis=0)
    x1, y1 = lips.max(axis=0)
    height = max(y1 - y0, 4.0)
    width = x1 - x0
    h, w = rgb.shape[:2]
    box_x0 = int(max(0, x0 - 0.1 * width))
    box_x1 = int(min(w, x1 + 0.1 * width))
    box_y0 = int(max(0, y0 - 0.3 * height))
    box_y1 = int(min(h, y1 + 0.8 * height))
    luma = rgb[box_y0:box_y1, box_x0:box_x1].astype(np.float32) @ np.array(
        [0.299, 0.587, 0.114], dtype=np.float32
    )
    # The closed mouth's lips and skin set the bright side; an open mouth's inside is far
    # darker (below ~60 on any lit face), so half the median is a safe cut.
    threshold = min(70.0, 0.5 * float(np.median(luma)))
    return MouthBox(box_x0, box_y0, box_x1, box_y1, threshold)


# -- the lag ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LagEstimate:
    lag_ms: float
    correlation: float
    pictures: int


def audio_clock(chunks: Sequence[AudioChunk], window_s: float = 1.0) -> np.ndarray:
    """When each chunk's last sample was played: its sample position plus the smallest
    arrival delay seen within `window_s` around it (delivery delays only add)."""
    if not chunks:
        return np.zeros(0)
    ends = np.cumsum([c.samples for c in chunks]) / AUDIO_RATE
    arrived = np.array([c.arrived for c in chunks])
    offset = arrived - ends
    clock = np.empty_like(arrived)
    lo = hi = 0
    for i, t in enumerate(arrived):
        while arrived[lo] < t - window_s:
            lo += 1
        while hi < len(arrived) and arrived[hi] <= t + window_s:
            hi += 1
        clock[i] = ends[i] + offset[lo:hi].min()
    return clock


def estimate_lag(
    pictures: Sequence[Picture],
    audio: Sequence[AudioChunk],
    *,
    fps: float = 30.0,
    max_lag_ms: float = 250.0,
    min_correlation: float = 0.3,
    clock: str = "shown",
) -> LagEstimate:
    """The lag L (ms) for which the mouth signal of the pictures best matches the loudness of
    the audio played during [shown - L, shown - L + 1/fps): each picture shows the mouth for
    its own 1/fps of audio, and a picture in sync is shown as that audio starts."""
    frames = [p for p in pictures if p.mouth_dark is not None]
    if len(frames) < 30 or len(audio) < 100:
        raise ValueError(f"too little media to measure a lag ({len(frames)} pictures)")
    # "shown": the receiver's render time; "arrived": when this process read the picture,
    # which is later than the render time when the receiver falls behind on a busy machine.
    times = np.array([p.shown if clock == "shown" else p.arrived for p in frames])
    mouth = np.array([p.mouth_dark for p in frames], dtype=np.float64)
    if np.std(mouth) < 1e-6:
        raise ValueError("the mouth did not move")
    ends = audio_clock(audio)
    starts = ends - np.array([c.samples for c in audio]) / AUDIO_RATE
    lag_ms, score = best_lag(
        times,
        mouth,
        starts,
        np.array([c.rms_db for c in audio]),
        period=1.0 / fps,
        max_lag_ms=max_lag_ms,
    )
    if score < min_correlation:
        raise ValueError(f"mouth and loudness do not match (best correlation {score:.2f})")
    return LagEstimate(round(lag_ms, 1), round(score, 3), len(frames))
