"""The LMDM's per-frame condition, 1103 dims, as Ditto's ConditionHandler builds it:

    [0:1024]     audio features (HuBERT, one row per 25 fps frame)
    [1024:1032]  emotion, 8 weights over Ditto's labels (DITTO_EMOTIONS)
    [1032:1034]  eye openness, the source's (left, right) as eye_info measures it
    [1034:1040]  eye-ball offsets (x_L, x_R, y_L, y_R, z_L, z_R): eye_info's (3, 2) flattened
    [1040:1103]  sc, the source's canonical keypoints (identity)

Ditto's `emo` forms (`emotion_sequence`): an int i -> softmax of a vector with 8 at i
(~0.9977 there); a list of ints -> the same with 8 at each; a list of lists -> one such vector
per frame; an (m, 8) array -> used as is. The project's emotions map onto Ditto's labels via
EMOTION_LABELS (`project_emotion`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AUDIO_DIM = 1024
EMOTION_DIM = 8
EYE_OPEN_DIM = 2
EYE_BALL_DIM = 6
SC_DIM = 63
CONDITION_DIM = AUDIO_DIM + EMOTION_DIM + EYE_OPEN_DIM + EYE_BALL_DIM + SC_DIM  # 1103

DITTO_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")
DEFAULT_EMO = 4
"""Ditto's default `emo`: neutral."""

EMOTION_LABELS: dict[str, tuple[int, ...]] = {
    "neutral": (4,),
    "happy": (3,),
    "sad": (5,),
    "concerned": (2, 5),  # fear + sad: worried
    "surprised": (6,),
    "angry": (0,),
    "reassuring": (3, 4),  # happy + neutral: a calm warmth
}
"""The project's seven emotions (avatar_runtime/state.py EMOTIONS) as Ditto label indices;
several indices are mixed the way Ditto mixes a list (`emo=[3, 4]`)."""

Emo = int | Sequence[int] | Sequence[Sequence[int]] | np.ndarray


def emotion_vector(labels: int | Sequence[int]) -> np.ndarray:
    """(8,) softmax of a vector holding 8 at each of `labels` (Ditto's _get_emo_avg)."""
    indices = [labels] if isinstance(labels, (int, np.integer)) else list(labels)
    logits = np.zeros(EMOTION_DIM, dtype=np.float64)
    for i in indices:
        if not 0 <= int(i) < EMOTION_DIM:
            raise ValueError(f"emotion index {i} outside 0..7")
        logits[int(i)] = 8.0
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()).astype(np.float32)


def emotion_sequence(emo: Emo, frames: int = -1) -> np.ndarray:
    """Ditto's `emo` forms -> (m, 8); with frames > 0, exactly `frames` rows (one row is
    repeated, a longer sequence is cut; a shorter one of more than one row is an error)."""
    if isinstance(emo, np.ndarray) and emo.ndim == 2 and emo.shape[1] == EMOTION_DIM:
        seq = emo.astype(np.float32)
    elif isinstance(emo, (int, np.integer)) and not isinstance(emo, bool):
        seq = emotion_vector(int(emo))[None]
    elif (
        isinstance(emo, (list, tuple))
        and 0 < len(emo) < EMOTION_DIM
        and all(isinstance(i, (int, np.integer)) for i in emo)
    ):
        seq = emotion_vector([int(i) for i in emo])[None]
    elif isinstance(emo, (list, tuple)) and emo and isinstance(emo[0], (list, tuple)):
        seq = np.stack([emotion_vector(list(labels)) for labels in emo])
    else:
        raise ValueError(f"unsupported emo: {emo!r}")
    if frames <= 0 or len(seq) == frames:
        return seq
    if len(seq) == 1:
        return np.repeat(seq, frames, axis=0)
    if len(seq) > frames:
        return seq[:frames]
    raise ValueError(f"{len(seq)} emotion rows cannot cover {frames} frames")


def project_emotion(emotion: str, intensity: float = 1.0) -> np.ndarray:
    """(8,) Ditto emotion weights for one of the project's emotions at `intensity` (0..1):
    the neutral vector blended linearly toward the emotion's."""
    if emotion not in EMOTION_LABELS:
        raise ValueError(f"unknown emotion {emotion!r}; known: {', '.join(EMOTION_LABELS)}")
    amount = float(np.clip(intensity, 0.0, 1.0))
    neutral = emotion_vector(DEFAULT_EMO)
    return ((1.0 - amount) * neutral + amount * emotion_vector(EMOTION_LABELS[emotion])).astype(
        np.float32
    )


# MediaPipe 478-point indices Ditto's eye_info uses (its "L" eye is corners 33/133).
_L_WIDTH = (33, 133)
_L_HEIGHTS = ((145, 159), (144, 160), (153, 158))
_R_WIDTH = (263, 362)
_R_HEIGHTS = ((374, 386), (373, 387), (380, 385))
_L_BALL = 468
_R_BALL = 473
_EPS = 1e-8


def eye_features(
    landmarks: np.ndarray, width: float, height: float
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe 478 landmarks (n, 478, 3) or (478, 3), in pixels of an image `width` x
    `height` (the project's renderers/vision face_mesh: x, y pixels, z in x's pixel scale) ->
    (eye_open (n, 2), eye_ball (n, 6)) as Ditto's EyeAttrUtilsByMP measures them.

    Ditto measures on its 512 crop with landmarks normalised by (w, h, w); pass landmarks in
    the coordinates of the crop the portrait is animated in, with that crop's size."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.shape[1:] != (478, 3):
        raise ValueError(f"expected (n, 478, 3) landmarks, got {lm.shape}")
    lm = lm / np.array([width, height, width], dtype=np.float64)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a - b) ** 2).sum(-1))

    def direction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - b) / (dist(a, b)[:, None] + _EPS)

    def eye(
        corners: tuple[int, int], heights: tuple[tuple[int, int], ...], ball: int
    ) -> tuple[np.ndarray, np.ndarray]:
        outer, inner = lm[:, corners[0]], lm[:, corners[1]]
        span = dist(outer, inner)
        openness = sum(dist(lm[:, a], lm[:, b]) for a, b in heights) / (span + _EPS)
        centre = (outer + inner) * 0.5
        iris = lm[:, ball]
        move = (direction(iris, centre) - direction(outer, inner)) * dist(iris, centre)[:, None]
        return openness, move

    l_open, l_move = eye(_L_WIDTH, _L_HEIGHTS, _L_BALL)
    r_open, r_move = eye(_R_WIDTH, _R_HEIGHTS, _R_BALL)
    eye_open = np.stack([l_open, r_open], -1)
    eye_ball = np.stack([l_move, r_move], -1).reshape(-1, EYE_BALL_DIM)
    return eye_open.astype(np.float32), eye_ball.astype(np.float32)


def _mirror_index(index: int, size: int) -> int:
    turn, rest = divmod(index, size)
    return rest if turn % 2 == 0 else size - rest - 1


class ConditionBuilder:
    """Per-frame conditions for windows of audio features (Ditto's ConditionHandler).

    sc: (63,) the source's canonical keypoints; eye_open (n, 2) and eye_ball (n, 6) from
    eye_features for the source's n frames (one for a still portrait; for several, frame i
    uses source frame i ping-ponged, or frame 0 with `first_eye_frame_only`); emo: any
    emotion_sequence form, its rows cycled by frame index when there are several."""

    def __init__(
        self,
        sc: np.ndarray,
        eye_open: np.ndarray,
        eye_ball: np.ndarray,
        emo: Emo = DEFAULT_EMO,
        *,
        first_eye_frame_only: bool = False,
    ) -> None:
        self.sc = np.asarray(sc, np.float32).reshape(SC_DIM)
        self.eye_open = np.asarray(eye_open, np.float32).reshape(-1, EYE_OPEN_DIM)
        self.eye_ball = np.asarray(eye_ball, np.float32).reshape(-1, EYE_BALL_DIM)
        if len(self.eye_open) != len(self.eye_ball) or len(self.eye_open) == 0:
            raise ValueError("eye_open and eye_ball need the same, non-zero number of frames")
        self.first_eye_frame_only = first_eye_frame_only
        self.emo = emotion_sequence(emo)

    def set_emotion(self, emo: Emo) -> None:
        self.emo = emotion_sequence(emo)

    def __call__(self, audio: np.ndarray, start: int, emo: Emo | None = None) -> np.ndarray:
        """audio (n, 1024) features for frames start .. start + n - 1 (start < 0: padding
        before the first frame, read as frame 0) -> (n, 1103) float32."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 2 or audio.shape[1] != AUDIO_DIM:
            raise ValueError(f"expected (n, {AUDIO_DIM}) audio features, got {audio.shape}")
        n = audio.shape[0]
        frames = [max(i, 0) for i in range(start, start + n)]
        if emo is not None:
            emo_rows = emotion_sequence(emo, n)
        else:
            emo_rows = self.emo[[i % len(self.emo) for i in frames]]
        count = len(self.eye_open)
        if self.first_eye_frame_only or count == 1:
            eye_index = [0] * n
        else:
            eye_index = [_mirror_index(i, count) for i in frames]
        sc_rows = np.broadcast_to(self.sc, (n, SC_DIM))
        return np.concatenate(
            [audio, emo_rows, self.eye_open[eye_index], self.eye_ball[eye_index], sc_rows],
            axis=1,
        ).astype(np.float32)
