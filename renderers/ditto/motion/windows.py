"""The bookkeeping around the LMDM's 80-frame windows, and 25 -> 30 fps resampling.

Windows (Ditto's Audio2Motion plus its online pipeline's audio2motion worker), for one
generated window `pred` (seq_frames, 265) at a time against the motion generated so far, `res`:

* fusion: the window's first `overlap` frames lie over res's last `overlap`; over the last
  fuse_length of those (online: min(overlap, valid_clip_len); offline: overlap) the two are
  cross-faded linearly, weight of the new window i / fuse_length for i = 0 .. fuse_length-1;
  the window's frames after the overlap are appended (valid_clip_len new frames);
* smoothing: a centred moving average of smooth_k frames over dims < 202 (scale, pose, t;
  exp is not smoothed), over the whole first window, then over the fused frames and the first
  new one, each frame averaged from the values before smoothing;
* cond_frame: the source motion for the first window, then res[len(res) - overlap - 1], the
  frame just before the next window's first; with fix_kp_cond = N > 0 it is reset to the
  source every N windows (optionally keeping a dim range from res);
* emission: online, the first window emits nothing and its first frame becomes d0; frames
  become final once the next window has been fused past them; offline, frames emit from 0;
* history is trimmed to 2 x seq_frames.

Resampling: Ditto runs at 25 fps. `motion_at` gives the driving motion at any time from a
25 fps sequence in keypoint space (MotionFrames: scale, t and exp interpolated linearly, pose
in degrees, never in logits); `FrameResampler` does the same on a stream, emitting each 30 fps
frame once, as soon as the 25 fps frames around it are known.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .motion import MOTION_DIM, POSE_AND_T_DIMS, MotionFrames

SEQ_FRAMES = 80
DEFAULT_OVERLAP = 10
SMOOTH_K = 3
MOTION_FPS = 25


def fuse_weights(fuse_length: int) -> np.ndarray:
    """(fuse_length,) the new window's weight over the fused frames: i / fuse_length."""
    return np.arange(fuse_length, dtype=np.float32) / np.float32(fuse_length)


def fuse(history: np.ndarray, window: np.ndarray, overlap: int, fuse_length: int) -> np.ndarray:
    """history (L, D), window (S, D) whose first `overlap` frames lie over history's last
    `overlap` -> (L + S - overlap, D): the last fuse_length overlapping frames cross-faded,
    then the window's frames after the overlap."""
    history = np.array(history, dtype=np.float32, copy=True)
    window = np.asarray(window, dtype=np.float32)
    if not 0 < fuse_length <= overlap <= min(len(history), len(window)):
        raise ValueError(
            f"need 0 < fuse_length ({fuse_length}) <= overlap ({overlap}) <= lengths "
            f"({len(history)}, {len(window)})"
        )
    alpha = fuse_weights(fuse_length)[:, None]
    tail = slice(len(history) - fuse_length, len(history))
    head = slice(overlap - fuse_length, overlap)
    history[tail] = history[tail] * (1.0 - alpha) + window[head] * alpha
    return np.concatenate([history, window[overlap:]], axis=0)


def smooth(
    sequence: np.ndarray,
    start: int = 0,
    end: int | None = None,
    k: int = SMOOTH_K,
    dims: int = POSE_AND_T_DIMS,
) -> np.ndarray:
    """A copy of sequence (L, D) with frames start .. end-1 replaced, in dims < `dims`, by the
    mean over the centred k-frame window (cut at the ends), read from the unsmoothed values."""
    out = np.array(sequence, dtype=np.float32, copy=True)
    if k <= 1:
        return out
    n = len(out)
    end = n if end is None else min(end, n)
    half = k // 2
    original = np.asarray(sequence, dtype=np.float32)
    for i in range(max(start, 0), end):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        out[i, :dims] = original[lo:hi, :dims].mean(axis=0)
    return out


class MotionWindows:
    """Generated windows in, final 25 fps motion frames (N, 265) out.

    source: (265,) the source's motion vector (SourceMotion.vector), the first cond_frame."""

    def __init__(
        self,
        source: np.ndarray,
        *,
        seq_frames: int = SEQ_FRAMES,
        overlap: int = DEFAULT_OVERLAP,
        online: bool = True,
        smooth_k: int = SMOOTH_K,
        fix_kp_cond: int = 0,
        fix_kp_cond_dims: tuple[int, int] | None = None,
    ) -> None:
        if not 0 < overlap < seq_frames:
            raise ValueError(f"overlap must lie in 1..{seq_frames - 1}, got {overlap}")
        self.source = np.asarray(source, np.float32).reshape(MOTION_DIM)
        self.seq_frames = seq_frames
        self.overlap = overlap
        self.valid_clip_len = seq_frames - overlap
        self.online = online
        self.fuse_length = min(overlap, self.valid_clip_len) if online else overlap
        self.smooth_k = smooth_k
        self.fix_kp_cond = fix_kp_cond
        self.fix_kp_cond_dims = fix_kp_cond_dims
        self.reset()

    def reset(self) -> None:
        self.history: np.ndarray | None = None
        """(L, 265): the motion kept (at most 2 x seq_frames frames)."""
        self.cond_frame = self.source.copy()
        """(265,) the frame the next window is conditioned on."""
        self.d0: np.ndarray | None = None
        """(265,) the first generated frame: the stitcher's relative reference."""
        self.windows = 0
        self._emit_from: int | None = None if self.online else 0
        self.emitted = 0
        """Frames emitted so far."""

    def push(self, window: np.ndarray, valid: int | None = None) -> np.ndarray:
        """One generated window (seq_frames, 265) -> the frames it makes final (k, 265).

        valid: how many of its new frames hold real audio (the last, padded window of an
        utterance: fewer than valid_clip_len)."""
        window = np.asarray(window, np.float32).reshape(self.seq_frames, MOTION_DIM)
        valid = self.valid_clip_len if valid is None else int(valid)
        if self.history is None:
            res = smooth(window, 0, len(window), self.smooth_k)
        else:
            res = fuse(self.history, window, self.overlap, self.fuse_length)
            n = len(res)
            res = smooth(
                res,
                n - self.valid_clip_len - self.fuse_length,
                n - self.valid_clip_len + 1,
                self.smooth_k,
            )
        self.windows += 1
        self._update_cond(res)
        if self.d0 is None:
            self.d0 = res[0].copy()
        out = np.zeros((0, MOTION_DIM), np.float32)
        if self._emit_from is None:
            self._emit_from = len(res) - self.fuse_length
        else:
            out = res[self._emit_from : self._emit_from + valid].copy()
            self._emit_from += valid
            self.emitted += len(out)
        limit = 2 * self.seq_frames
        if len(res) > limit:
            cut = len(res) - limit
            res = res[cut:]
            self._emit_from -= cut
        self.history = res
        return out

    def _update_cond(self, res: np.ndarray) -> None:
        last = res[len(res) - self.overlap - 1]
        if self.fix_kp_cond > 0 and self.windows % self.fix_kp_cond == 0:
            cond = self.source.copy()
            if self.fix_kp_cond_dims is not None:
                lo, hi = self.fix_kp_cond_dims
                cond[lo:hi] = last[lo:hi]
            self.cond_frame = cond
        else:
            self.cond_frame = last.copy()


def _position(time_s: float, fps: float) -> float:
    """Frame position of a time, snapped to the frame when within float noise of it."""
    position = float(Fraction(time_s).limit_denominator(1_000_000) * Fraction(fps))
    nearest = round(position)
    return float(nearest) if abs(position - nearest) < 1e-9 else position


def _blend(frames: MotionFrames, low: np.ndarray, high: np.ndarray, w: np.ndarray) -> MotionFrames:
    def mix(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32)
        shape = (-1,) + (1,) * (a.ndim - 1)
        ww = w.reshape(shape).astype(np.float32)
        return (a[low] * (1.0 - ww) + a[high] * ww).astype(np.float32)

    return MotionFrames(
        scale=mix(frames.scale),
        pitch=mix(frames.pitch),
        yaw=mix(frames.yaw),
        roll=mix(frames.roll),
        t=mix(frames.t),
        exp=mix(frames.exp),
    )


def motion_at(
    frames: MotionFrames, times: float | np.ndarray, fps: float = MOTION_FPS
) -> MotionFrames:
    """The motion at `times` (seconds; frame i of `frames` is at i / fps), one row per time:
    linear between the two neighbouring frames in keypoint space, exactly a frame at its own
    instant, held at the ends outside the sequence."""
    count = len(frames)
    if count == 0:
        raise ValueError("no frames to sample")
    ts = np.atleast_1d(np.asarray(times, dtype=np.float64))
    return _at_positions(frames, np.array([_position(float(t), fps) for t in ts]))


def _at_positions(frames: MotionFrames, positions: np.ndarray) -> MotionFrames:
    count = len(frames)
    positions = np.clip(np.asarray(positions, np.float64), 0.0, count - 1.0)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, count - 1)
    w = (positions - low).astype(np.float32)
    return _blend(frames, low, high, w)


def resample(
    frames: MotionFrames, src_fps: float = MOTION_FPS, dst_fps: float = 30.0
) -> MotionFrames:
    """The whole sequence at dst_fps: frame j at j / dst_fps, up to the last source frame's
    time (no frame past it, none repeated)."""
    duration = Fraction(len(frames) - 1) / Fraction(src_fps).limit_denominator(1_000_000)
    dst = Fraction(dst_fps).limit_denominator(1_000_000)
    count = math.floor(duration * dst) + 1
    times = np.array([float(Fraction(j) / dst) for j in range(count)])
    return motion_at(frames, times, src_fps)


class FrameResampler:
    """Streaming 25 -> 30 fps: push 25 fps MotionFrames as they become final, get back every
    30 fps frame whose time they now cover (frame j at j / dst_fps), each exactly once. Keeps
    only the last source frame between pushes."""

    def __init__(self, src_fps: float = MOTION_FPS, dst_fps: float = 30.0) -> None:
        self.src_fps = Fraction(src_fps).limit_denominator(1_000_000)
        self.dst_fps = Fraction(dst_fps).limit_denominator(1_000_000)
        self.reset()

    def reset(self) -> None:
        self._tail: MotionFrames | None = None
        self._tail_index = 0
        """Source index of the first frame in _tail."""
        self._received = 0
        self.next_frame = 0
        """Index of the next 30 fps frame to emit."""

    def push(self, frames: MotionFrames) -> MotionFrames | None:
        """New 25 fps frames -> the 30 fps frames now known (None when there are none)."""
        if len(frames) == 0:
            return None
        known = frames if self._tail is None else MotionFrames.concat([self._tail, frames])
        self._received += len(frames)
        last = self._received - 1  # source index of the last frame known
        first = self._tail_index
        positions: list[float] = []
        j = self.next_frame
        while Fraction(j) / self.dst_fps * self.src_fps <= last:
            positions.append(float(Fraction(j) / self.dst_fps * self.src_fps - first))
            j += 1
        out = _at_positions(known, np.array(positions)) if positions else None
        self.next_frame = j
        self._tail = known.take(-1)
        self._tail_index = last
        return out
