"""A streaming session's frames as WebRTC media (aiortc): one video and one audio track per peer.

The WebSocket carries each frame as a JPEG in JSON, without its audio; a WebRTC peer gets the
same frames as a real video track (VP8 or H.264, as the peer offers) and the audio they carry
as an Opus track, played together. Signalling is one offer/answer exchange with no trickle
ICE (aiortc gathers every candidate before it answers): `WHEP` over HTTP (whep.py) or a
`webrtc_offer` message on the session's WebSocket, both through `answer_offer`.

How a peer plays a session (`Playout`), as the LiveKit path does (avatar_runtime/publisher.py
and pacer.py):
- One clock for both tracks. The peer's media timeline is cut into slots of 1/fps; slot k
  starts at media time k/fps and is presented at wall time t0 + k/fps (t0: when the peer's
  first track asked for media). Each slot takes the next frame the session produced, or none;
  its picture is slot k's video frame (pts k/fps) and its audio window is laid on the audio
  timeline at exactly the same media time (pts in 1/48000), so a frame's picture and its own
  audio leave at the same moment and carry the same position. aiortc's RTCP sender reports tie
  each track's RTP clock to the wall clock when its packets leave, which is how a receiver
  (a browser) lines the two tracks up; both are in one MediaStream (one msid), as the LiveKit
  tracks are (publisher.AV_STREAM).
- Real-time output. Frames may come in bursts (the renderer runs faster than real time when
  audio arrives faster than real time): they wait in a bounded buffer and leave one per slot.
  A first frame after a quiet spell waits `prebuffer_s` (100 ms, the depth of the LiveKit
  path's audio queue) so that the next ones, coming as their audio comes, are there when their
  slots come up; a full buffer stops reading the session, whose per-consumer queue then drops
  frames (`FrameSubscription.dropped`) rather than grow.
- Pictures leave early by the time aiortc takes to encode one (a running estimate, as
  `FramePacer` starts finishing a picture early by its cost), so their packets go out on their
  slots, beside the audio of the same time.
- No stalls. A slot with no frame is silence with the last picture held (black before the
  first one), so both tracks always run at their rate and the receiver never starves. A
  track that falls behind (a slow encoder, a busy loop) skips to what is due now, as
  `FramePacer` restarts its clock after MAX_BEHIND_S: a late picture is dropped, its audio
  still plays; audio more than MAX_BEHIND_S late is skipped.
- Audio goes out in 20 ms frames at 48 kHz (Opus' rate), resampled from the session's 16 kHz
  by one continuous resampler (no seams at frame edges).

`PeerRegistry` owns the peer connections: at most `max_per_session` per session and `max_total`
in all; a peer is closed when its session ends (after its last frames have played), when it
disconnects or fails, when it has not connected within `connect_timeout_s`, when asked
(`close_peer`, the WHEP DELETE) and when the service stops (`aclose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from avatar_runtime.pacer import MAX_BEHIND_S, CostEstimate
from avatar_runtime.timeline import FrameTimeline, SampleBuffer

from ..errors import ApiError
from .frames import AUDIO_RATE, FrameSource, FrameSubscription, StreamFrame

log = logging.getLogger("control_api.streaming")

OUTPUT_AUDIO_RATE = 48000
"""The audio track's rate: Opus' own, so the encoder only has to make it stereo."""
AUDIO_FRAME_SAMPLES = OUTPUT_AUDIO_RATE // 50
"""20 ms, WebRTC's usual audio packet."""
VIDEO_CLOCK_RATE = 90000
"""RTP's video clock; video pts are in 1/90000 s."""
PREBUFFER_S = 0.1
"""How long a first frame after silence waits before it plays: the LiveKit path's audio queue
(AvatarPublisher's queue_size_ms=100), which absorbs the same jitter of arriving frames."""
MAX_BUFFER_S = 5.0
"""Frames a peer holds ahead of playing them (a burst). Past this it stops reading, and as
much again waits in the session's queue for this peer before the session drops frames."""
DECODE_LEAD_S = 0.010
"""A slot's picture is decoded this long before its time, so it leaves on time."""
AUDIO_TOLERANCE_SAMPLES = 16
"""A frame's audio may differ from its slot by this many 16 kHz samples (1 ms; fractional
rates make windows of 533 or 534) before it is padded or cut to fit."""
GATHER_TIMEOUT_S = 10.0
"""The longest ICE gathering may take before the answer (a STUN server that does not answer)."""
DEFAULT_MAX_PEERS_PER_SESSION = 2
DEFAULT_MAX_PEERS = 16
DEFAULT_CONNECT_TIMEOUT_S = 20.0


class Playout:
    """One peer's view of a session: its frames on one clock, as a video and an audio track.

    `video`, `audio`: whether the peer takes that track (what is not taken is not kept).
    `clock` is the wall clock in seconds (time.perf_counter); tests may give another."""

    def __init__(
        self,
        source: FrameSource,
        *,
        video: bool = True,
        audio: bool = True,
        prebuffer_s: float = PREBUFFER_S,
        max_buffer_s: float = MAX_BUFFER_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if source.fps <= 0:
            raise ValueError(f"a session's fps must be positive, not {source.fps}")
        self.session_id = source.session_id
        self.width = source.width
        self.height = source.height
        self._with_video = video
        self._with_audio = audio
        self._timeline = FrameTimeline(AUDIO_RATE, source.fps)
        self.fps: Fraction = self._timeline.fps
        self._clock = clock
        self._prebuffer_s = prebuffer_s
        self._max_buffer = max(1, math.ceil(float(self.fps) * max_buffer_s))
        self._buffer: deque[tuple[float, StreamFrame]] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._subscription: FrameSubscription = source.subscribe(max_queue=self._max_buffer)
        self._t0: float | None = None
        self._assigned = 0
        """Slots [0, _assigned) have been given their frame (or none)."""
        self._playing = False
        self._pictures: dict[int, bytes] = {}
        """JPEG of each assigned slot not yet shown that has one (idle slots have none)."""
        self._video_next = 0
        self._video_returned_at: float | None = None
        self._encode_cost = CostEstimate(limit=0.5 / float(self.fps))
        """How long aiortc takes to encode and send a picture (it starts that much early)."""
        self._audio_next = 0
        """Next audio sample (48 kHz) the audio track sends."""
        self._audio_in = 0
        """16 kHz samples given to the resampler so far: the audio timeline's end."""
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OUTPUT_AUDIO_RATE)
        self._audio = SampleBuffer(np.int16)
        self._jpeg_shown: bytes | None = None
        self._picture = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        self._source_ended = False
        self._drained_at: float | None = None
        self.finished = asyncio.Event()
        """Set once the session has ended and every frame it sent has been played."""
        self.closed = False
        self.played = 0
        """Frames of the session given a slot (their audio played, their picture due)."""
        self.pictures_skipped = 0
        """Pictures not sent because the video track was late."""
        self.ran_dry = 0
        """Times the buffer ran out while playing: the end of each stretch of frames, and a
        gap in one (frames that came later than the prebuffer allows for)."""
        self.video = PlayoutVideoTrack(self)
        self.audio = PlayoutAudioTrack(self)
        self._reader = asyncio.create_task(self._read(), name=f"webrtc-read-{self.session_id}")

    # -- state -------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """A track has asked for media: the clock runs."""
        return self._t0 is not None

    @property
    def buffered(self) -> int:
        """Frames waiting for their slot."""
        return len(self._buffer)

    @property
    def dropped(self) -> int:
        """Frames the session dropped for this peer (its queue was full)."""
        return self._subscription.dropped

    def stats(self) -> dict[str, float | int]:
        return {
            "played": self.played,
            "buffered": self.buffered,
            "dropped": self.dropped,
            "pictures_skipped": self.pictures_skipped,
            "ran_dry": self.ran_dry,
        }

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._subscription.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self.video.stop()
        self.audio.stop()
        self.finished.set()

    # -- input -------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for frame in self._subscription:
                while len(self._buffer) >= self._max_buffer:
                    self._room.clear()
                    await self._room.wait()
                self._buffer.append((self._clock(), frame))
        except Exception:
            log.exception("webrtc: reading session %s failed", self.session_id)
        finally:
            self._source_ended = True
            if self._t0 is None:
                # Nobody is playing: nothing to finish.
                self.finished.set()

    def _take(self) -> StreamFrame | None:
        """The frame for the next slot: the oldest buffered one, once playing has started."""
        if not self._buffer:
            if self._playing:
                self._playing = False
                if not self._source_ended:
                    self.ran_dry += 1
            return None
        if not self._playing:
            arrived = self._buffer[0][0]
            if self._clock() - arrived < self._prebuffer_s and not self._source_ended:
                return None
            self._playing = True
        _, frame = self._buffer.popleft()
        self._room.set()
        return frame

    # -- the timeline ------------------------------------------------------------------------

    def slot_time(self, slot: int) -> float:
        """Media time (seconds from t0) at which `slot` starts."""
        return float(slot / self.fps)

    def _start_clock(self) -> float:
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        return now

    def _assign_next(self) -> None:
        """Give the next slot its frame (or none), its picture and its audio window."""
        slot = self._assigned
        self._assigned += 1
        frame = self._take()
        end = self._timeline.boundary(slot + 1)
        wanted = end - self._audio_in
        if frame is None:
            samples = np.zeros(max(0, wanted), dtype=np.int16)
            if self._source_ended and not self._buffer and self._drained_at is None:
                self._drained_at = self.slot_time(slot)
        else:
            self.played += 1
            self._drained_at = None
            if self._with_video:
                self._pictures[slot] = frame.jpeg
            samples = np.frombuffer(frame.audio, dtype="<i2").astype(np.int16)
            if abs(samples.size - wanted) > AUDIO_TOLERANCE_SAMPLES:
                # Not this slot's length: fit it, so the audio stays on the pictures' timeline.
                fitted = np.zeros(max(0, wanted), dtype=np.int16)
                n = min(fitted.size, samples.size)
                fitted[:n] = samples[:n]
                samples = fitted
        self._audio_in += samples.size
        if samples.size and self._with_audio:
            frame16 = av.AudioFrame.from_ndarray(
                samples.reshape(1, -1), format="s16", layout="mono"
            )
            frame16.sample_rate = AUDIO_RATE
            for out in self._resampler.resample(frame16):
                self._audio.append(out.to_ndarray().reshape(-1))

    # -- output: the tracks pull -------------------------------------------------------------

    async def next_video(self) -> av.VideoFrame:
        now = self._start_clock()
        assert self._t0 is not None
        if self._video_returned_at is not None:
            # aiortc encodes and sends each picture before it asks for the next one.
            self._encode_cost.add(now - self._video_returned_at)
        lead = self._encode_cost.value
        due = int((now + lead - self._t0) * self.fps)  # the slot to send now
        slot = max(self._video_next, due)  # late: send what is due now
        await _sleep_until(self._clock, self._t0 + self.slot_time(slot) - lead - DECODE_LEAD_S)
        while self._assigned <= slot:
            self._assign_next()
        # The newest picture up to this slot (older ones were due while the track was late);
        # none: hold the last one.
        due_pictures = sorted(s for s in self._pictures if s <= slot)
        jpeg = self._pictures.pop(due_pictures[-1]) if due_pictures else None
        for s in due_pictures[:-1]:
            del self._pictures[s]
            self.pictures_skipped += 1
        if jpeg is not None and jpeg is not self._jpeg_shown:
            picture = await asyncio.to_thread(_decode_jpeg, jpeg)
            if picture is not None:
                self._picture = picture
            self._jpeg_shown = jpeg
        self._video_next = slot + 1
        self._check_finished(self.slot_time(slot))
        # Out early by the encoding time, so that its packets leave on its slot, with the
        # audio of the same media time.
        await _sleep_until(self._clock, self._t0 + self.slot_time(slot) - lead)
        frame = av.VideoFrame.from_ndarray(self._picture, format="bgr24")
        frame.pts = round(slot * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        self._video_returned_at = self._clock()
        return frame

    async def next_audio(self) -> av.AudioFrame:
        now = self._start_clock()
        assert self._t0 is not None
        start = self._audio_next
        due = int((now - self._t0) * OUTPUT_AUDIO_RATE)
        if due - start > MAX_BEHIND_S * OUTPUT_AUDIO_RATE:
            start = due - due % AUDIO_FRAME_SAMPLES
        await _sleep_until(self._clock, self._t0 + start / OUTPUT_AUDIO_RATE)
        stop = start + AUDIO_FRAME_SAMPLES
        while self._audio.end < stop:
            self._assign_next()
        samples = self._audio.read(start, stop)
        self._audio.trim_before(stop)
        self._audio_next = stop
        self._check_finished(start / OUTPUT_AUDIO_RATE)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OUTPUT_AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, OUTPUT_AUDIO_RATE)
        return frame

    def _check_finished(self, media_time: float) -> None:
        """After the session ended: set `finished` once its last frame has played (and a
        little more, so the last audio leaves too)."""
        if (
            self._source_ended
            and not self._buffer
            and self._drained_at is not None
            and media_time >= self._drained_at + 2 * PREBUFFER_S
        ):
            self.finished.set()


class PlayoutVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self._playout = playout

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live" or self._playout.closed:
            raise MediaStreamError
        return await self._playout.next_video()


class PlayoutAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self._playout = playout

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live" or self._playout.closed:
            raise MediaStreamError
        return await self._playout.next_audio()


def _decode_jpeg(jpeg: bytes) -> np.ndarray | None:
    picture = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if picture is None:
        log.debug("webrtc: a frame is not a decodable JPEG; holding the last picture")
    return picture


async def _sleep_until(clock: Callable[[], float], when: float) -> None:
    delay = when - clock()
    if delay > 0:
        await asyncio.sleep(delay)


# --- peer connections -----------------------------------------------------------------------


@dataclass
class WebRtcPeer:
    peer_id: str
    session_id: str
    pc: RTCPeerConnection
    playout: Playout
    answer: str = ""
    """The answer SDP, with every ICE candidate."""
    created_at: float = field(default_factory=time.monotonic)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """The connection failed or was closed by the other side."""
    watcher: asyncio.Task[None] | None = None


class PeerRegistry:
    """Every WebRTC peer of the service, by id, with the per-session and overall limits."""

    def __init__(
        self,
        *,
        max_per_session: int = DEFAULT_MAX_PEERS_PER_SESSION,
        max_total: int = DEFAULT_MAX_PEERS,
        ice_servers: Iterable[RTCIceServer] = (),
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        prebuffer_s: float = PREBUFFER_S,
        max_buffer_s: float = MAX_BUFFER_S,
    ) -> None:
        self.max_per_session = max_per_session
        self.max_total = max_total
        self.ice_servers = list(ice_servers)
        self.connect_timeout_s = connect_timeout_s
        self._prebuffer_s = prebuffer_s
        self._max_buffer_s = max_buffer_s
        self._peers: dict[str, WebRtcPeer] = {}
        self._pending: dict[str, str] = {}
        """Peers being negotiated (peer id -> session id): they count against the limits."""
        self._closed = False

    def get(self, peer_id: str) -> WebRtcPeer | None:
        return self._peers.get(peer_id)

    def peers(self, session_id: str | None = None) -> list[WebRtcPeer]:
        return [p for p in self._peers.values() if session_id in (None, p.session_id)]

    def _count(self, session_id: str | None = None) -> int:
        pending = sum(1 for s in self._pending.values() if session_id in (None, s))
        return len(self.peers(session_id)) + pending

    async def answer(self, source: FrameSource, sdp: str) -> WebRtcPeer:
        """A new peer playing `source`, from the client's offer `sdp`; `peer.answer` is the
        answer. ApiError: 404 session_not_found (the session has ended), 400 invalid_sdp,
        429 too_many_peers (this session has max_per_session), 503 webrtc_busy (the service
        has max_total), 503 webrtc_unavailable (shutting down)."""
        if self._closed:
            raise ApiError(503, "webrtc_unavailable", "the service is shutting down")
        if source.closed:
            raise ApiError(
                404, "session_not_found", f"streaming session '{source.session_id}' has ended"
            )
        if self._count(source.session_id) >= self.max_per_session:
            raise ApiError(
                429,
                "too_many_peers",
                f"session '{source.session_id}' already has {self.max_per_session} WebRTC "
                "peer(s) (AVATAR_WEBRTC_MAX_PEERS_PER_SESSION); close one (DELETE its "
                "Location) first",
            )
        if self._count() >= self.max_total:
            raise ApiError(
                503,
                "webrtc_busy",
                f"the service has {self.max_total} WebRTC peers, its limit "
                "(AVATAR_WEBRTC_MAX_PEERS); try again later",
                headers={"Retry-After": "5"},
            )
        peer_id = secrets.token_hex(8)
        self._pending[peer_id] = source.session_id
        try:
            peer = await self._negotiate(peer_id, source, sdp)
        finally:
            del self._pending[peer_id]
        if self._closed:
            await self._close(peer)
            raise ApiError(503, "webrtc_unavailable", "the service is shutting down")
        if source.closed:
            await self._close(peer)
            raise ApiError(
                404, "session_not_found", f"streaming session '{source.session_id}' has ended"
            )
        self._peers[peer_id] = peer
        peer.watcher = asyncio.create_task(self._watch(peer), name=f"webrtc-peer-{peer_id}")
        log.info(
            "webrtc: peer %s plays session %s (%d peer(s) in all)",
            peer_id,
            source.session_id,
            len(self._peers),
        )
        return peer

    async def _negotiate(self, peer_id: str, source: FrameSource, sdp: str) -> WebRtcPeer:
        if "m=" not in sdp:
            raise ApiError(400, "invalid_sdp", "the offer is not an SDP session description")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        playout: Playout | None = None
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as error:
                raise ApiError(
                    400, "invalid_sdp", f"the offer could not be applied: {error}"[:300]
                ) from None
            kinds = {t.kind for t in pc.getTransceivers()}
            if not kinds & {"audio", "video"}:
                raise ApiError(400, "invalid_sdp", "the offer asks for neither audio nor video")
            playout = Playout(
                source,
                video="video" in kinds,
                audio="audio" in kinds,
                prebuffer_s=self._prebuffer_s,
                max_buffer_s=self._max_buffer_s,
            )
            if "video" in kinds:
                pc.addTrack(playout.video)
            if "audio" in kinds:
                pc.addTrack(playout.audio)
            try:
                answer = await pc.createAnswer()
                await asyncio.wait_for(pc.setLocalDescription(answer), GATHER_TIMEOUT_S)
            except TimeoutError:
                raise ApiError(
                    503, "webrtc_unavailable", "ICE gathering did not finish in time"
                ) from None
            except Exception as error:
                raise ApiError(
                    400, "invalid_sdp", f"no answer to this offer: {error}"[:300]
                ) from None
        except BaseException:
            await pc.close()
            if playout is not None:
                await playout.aclose()
            raise
        peer = WebRtcPeer(peer_id, source.session_id, pc, playout)
        local = pc.localDescription
        assert local is not None  # set just above
        peer.answer = local.sdp

        @pc.on("connectionstatechange")
        def _state() -> None:
            state = pc.connectionState
            log.debug("webrtc: peer %s is %s", peer_id, state)
            if state == "connected":
                peer.connected.set()
            elif state in ("failed", "closed"):
                peer.ended.set()

        return peer

    async def _watch(self, peer: WebRtcPeer) -> None:
        """Close `peer` when it does not connect in time, fails, is closed by the other side,
        or its session has ended and played out."""
        waits = {
            asyncio.ensure_future(peer.ended.wait()): "the connection ended",
            asyncio.ensure_future(peer.playout.finished.wait()): "the session ended",
        }
        connected = asyncio.ensure_future(peer.connected.wait())
        try:
            done, _ = await asyncio.wait(
                {*waits, connected},
                timeout=self.connect_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                reason = f"not connected after {self.connect_timeout_s:g} s"
            else:
                if connected in done:
                    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                reason = waits.get(next(iter(done)), "the connection ended")
        finally:
            for task in (*waits, connected):
                task.cancel()
        log.info("webrtc: closing peer %s of session %s: %s", peer.peer_id, peer.session_id, reason)
        self._peers.pop(peer.peer_id, None)
        await self._close(peer)

    async def close_peer(self, peer_id: str, session_id: str | None = None) -> bool:
        """Close a peer (of `session_id`, when given); False when there is no such peer."""
        peer = self._peers.get(peer_id)
        if peer is None or (session_id is not None and peer.session_id != session_id):
            return False
        del self._peers[peer_id]
        if peer.watcher is not None and peer.watcher is not asyncio.current_task():
            peer.watcher.cancel()
        await self._close(peer)
        log.info("webrtc: peer %s of session %s closed", peer_id, peer.session_id)
        return True

    async def close_session(self, session_id: str) -> None:
        """Close every peer of a session at once (its frames will not be played out)."""
        for peer in self.peers(session_id):
            await self.close_peer(peer.peer_id)

    async def aclose(self) -> None:
        """Close every peer; no new one is accepted."""
        self._closed = True
        for peer_id in list(self._peers):
            await self.close_peer(peer_id)

    @staticmethod
    async def _close(peer: WebRtcPeer) -> None:
        try:
            await peer.pc.close()
        except Exception:
            log.debug("webrtc: closing peer %s failed", peer.peer_id, exc_info=True)
        await peer.playout.aclose()


def ice_servers(urls: Iterable[str], username: str | None, credential: str | None) -> list:
    """RTCIceServer entries for STUN/TURN URLs (`turn:` ones with the username and credential)."""
    servers = []
    for url in urls:
        if url.startswith(("turn:", "turns:")):
            servers.append(RTCIceServer(urls=url, username=username, credential=credential))
        else:
            servers.append(RTCIceServer(urls=url))
    return servers


_default_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PeerRegistry] = (
    weakref.WeakKeyDictionary()
)


def default_registry() -> PeerRegistry:
    """The running event loop's own registry (default limits, no ICE servers), for
    `answer_offer` calls that name none; the app's is `app[WEBRTC_PEERS]`."""
    loop = asyncio.get_running_loop()
    registry = _default_registries.get(loop)
    if registry is None:
        registry = _default_registries[loop] = PeerRegistry()
    return registry


async def answer_offer(source: FrameSource, sdp: str, *, peers: PeerRegistry | None = None) -> str:
    """Answer a WebRTC offer to play `source`: the answer SDP. The peer is kept in `peers`
    (the app's, `request.app[WEBRTC_PEERS]`; default: the process's own) until it or the
    session ends. ApiError as `PeerRegistry.answer`."""
    peer = await (peers or default_registry()).answer(source, sdp)
    return peer.answer


__all__ = [
    "OUTPUT_AUDIO_RATE",
    "PeerRegistry",
    "Playout",
    "WebRtcPeer",
    "answer_offer",
    "default_registry",
    "ice_servers",
]
