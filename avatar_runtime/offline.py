"""Offline talking-video renders: a portrait (or an avatar package) and an audio file in, an
MP4 (H.264 + AAC) out. The compute core of seed 003's render jobs.

The renderer is driven exactly as in a live session: the audio goes through the runtime's
`SpeechQueue` as one utterance, which cuts it into per-frame windows on the exact frame
timeline (with the renderer's look-behind and look-ahead) and resamples it for the renderer and
for the output track alike; every window becomes one `FrameRequest`, rendered in batches of the
renderer's preferred size and composited over the background like a published frame. Frame k
is written with exactly its own window of audio, so the MP4's two tracks start together and
end within one frame of each other (the last window is padded with silence).

Synchronous, no event loop, no network: meant for a worker process. (It uses livekit's audio
resampler, as the live runtime does; start such workers with the "spawn" method, not by forking
a process that has LiveKit connections open.)

Errors a caller should show the user are `OfflineRenderError`s with a stable `code`; anything
else (a renderer crashing, a full disk) is an internal failure worth a retry.

    python -m avatar_runtime.offline --audio speech.mp3 --out talk.mp4 [--image me.jpg]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from livekit import rtc
from PIL import Image
from threadpoolctl import threadpool_limits

import renderers
from renderers import Expression, FrameRequest, Renderer, RendererError, VideoFormat
from renderers.errors import CodedError

from .audio_file import AudioFileError, DecodedAudio, read_audio_mono
from .backgrounds import ORIGINAL, Background, BackgroundLibrary
from .compositor import Compositor
from .mp4_writer import Mp4Writer, aac_rate
from .speech import SpeechQueue, SpeechWindow
from .state import EMOTIONS

MIN_SIDE = 128
MAX_SIDE = 4096
MAX_FPS = 60.0
PUSH_CHUNK_S = 0.5
"""Audio handed to the speech queue at a time: windows are rendered as they become ready, so
memory stays flat however long the audio is."""

Progress = Callable[[float, str], None]


class OfflineRenderError(CodedError):
    """A render that cannot succeed with these inputs. `message` is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, retryable=False)


@dataclass(frozen=True)
class OfflineRenderLimits:
    max_audio_s: float = 600.0
    max_image_pixels: int = 40_000_000


@dataclass(frozen=True)
class RenderedVideo:
    path: Path
    duration_s: float
    frames: int
    width: int
    height: int
    fps: float


def render_talking_video(
    *,
    audio: Path,
    out: Path,
    renderer: str = "meshwarp",
    source: Path | None = None,
    emotion: str = "neutral",
    intensity: float = 0.7,
    width: int = 512,
    height: int = 512,
    fps: float = 30.0,
    limits: OfflineRenderLimits = OfflineRenderLimits(),
    progress: Progress | None = None,
    background: str = ORIGINAL,
) -> RenderedVideo:
    """Render `audio` spoken by `source` (a portrait image or video, an avatar package
    directory, or None for the renderer's default portrait) into the MP4 `out`.

    `out` appears only when it is complete (written beside it under a temporary name, then
    renamed); on any failure nothing is left behind and an existing `out` is untouched.
    `progress(fraction, message)` is called as the work goes on; an exception raised from it
    cancels the render. `background` is a background spec (`original`: the picture as the
    renderer draws it, `color:#RRGGBB`, `blur`, or an image id of the background library).
    """
    report = _ProgressReporter(progress)
    renderer_type = _renderer_type(renderer)
    expression = _expression(renderer_type, emotion, intensity)
    _check_video_format(width, height, fps)
    if source is not None:
        _check_source(Path(source), limits)
    compositor = Compositor(
        width,
        height,
        BackgroundLibrary(),
        mask_from_alpha=renderer_type.capabilities.alpha_is_person_mask,
    )
    try:
        backdrop = compositor.resolve(background)
    except ValueError as error:
        raise OfflineRenderError("invalid_background", _capitalised(str(error))) from None

    report(0.0, "reading audio")
    try:
        speech = read_audio_mono(Path(audio), max_seconds=limits.max_audio_s)
    except AudioFileError as error:
        raise OfflineRenderError(error.code, error.message) from None

    report(0.03, "preparing avatar")
    drawer = renderer_type(VideoFormat(width, height, fps))
    try:
        try:
            drawer.load(Path(source) if source is not None else None)
        except RendererError as error:
            raise OfflineRenderError(error.code, error.message) from None
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.partial"
        try:
            # One BLAS thread: renderers call BLAS for small products per frame, and OpenBLAS
            # threads spinning beside x264's made renders up to twice as slow on 2 busy cores.
            with threadpool_limits(limits=1, user_api="blas"):
                frames = _render_to(
                    partial, drawer, speech, expression, compositor, backdrop, report
                )
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    finally:
        drawer.close()
    report(1.0, "done")
    return RenderedVideo(
        path=out,
        duration_s=frames / fps,
        frames=frames,
        width=width,
        height=height,
        fps=float(fps),
    )


# -- checking the request ----------------------------------------------------------------------


def _renderer_type(name: str) -> type[Renderer]:
    valid = ", ".join(renderers.available())
    if name not in renderers.available():
        raise OfflineRenderError(
            "unknown_renderer", f"Unknown renderer '{name}'; valid renderers: {valid}"
        )
    reason = renderers.unavailable_reason(name)
    if reason is not None:
        raise OfflineRenderError(
            "renderer_unavailable", f"Renderer '{name}' is not available here: {reason}"
        )
    return renderers.renderer_class(name)


def _expression(renderer_type: type[Renderer], emotion: str, intensity: float) -> Expression:
    if emotion not in EMOTIONS:
        raise OfflineRenderError(
            "invalid_emotion", f"Unknown emotion '{emotion}'; valid emotions: {', '.join(EMOTIONS)}"
        )
    shown = renderer_type.capabilities.emotions
    if shown and emotion not in shown:
        raise OfflineRenderError(
            "invalid_emotion",
            f"Renderer '{renderer_type.name}' cannot show emotion '{emotion}'; "
            f"it shows: {', '.join(shown)}",
        )
    if (
        isinstance(intensity, bool)
        or not isinstance(intensity, int | float)
        or not (math.isfinite(intensity) and 0.0 <= intensity <= 1.0)
    ):
        raise OfflineRenderError("invalid_intensity", "Intensity must be between 0 and 1")
    return Expression(emotion, float(intensity))


def _check_video_format(width: int, height: int, fps: float) -> None:
    for name, side in (("width", width), ("height", height)):
        if (
            isinstance(side, bool)
            or not isinstance(side, int)
            or not MIN_SIDE <= side <= MAX_SIDE
            or side % 2
        ):
            raise OfflineRenderError(
                "invalid_size",
                f"Video {name} must be an even number of pixels from {MIN_SIDE} to {MAX_SIDE}",
            )
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 1.0 <= fps <= MAX_FPS:
        raise OfflineRenderError("invalid_fps", f"Frame rate must be from 1 to {MAX_FPS:g} fps")


def _check_source(source: Path, limits: OfflineRenderLimits) -> None:
    if not source.exists():
        raise OfflineRenderError("source_not_found", f"Avatar source not found: {source.name}")
    if not source.is_file():
        return  # an avatar package: the renderer reads what it needs from it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:  # reads the header only
                w, h = image.size
    except Image.DecompressionBombError:
        w = h = limits.max_image_pixels + 1  # Pillow refuses it outright: far too big
    except Exception:  # noqa: BLE001 - not an image Pillow knows (a video): the renderer decides
        return
    if w * h > limits.max_image_pixels:
        raise OfflineRenderError(
            "image_too_large",
            f"Image too large: {w}x{h} pixels, maximum {limits.max_image_pixels} pixels allowed",
        )


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- rendering ---------------------------------------------------------------------------------


def _render_to(
    path: Path,
    drawer: Renderer,
    speech: DecodedAudio,
    expression: Expression,
    compositor: Compositor,
    backdrop: Background,
    report: _ProgressReporter,
) -> int:
    """Render every frame of `speech` into the MP4 at `path`; the number of frames."""
    caps = drawer.capabilities
    video = drawer.video
    out_rate = aac_rate(speech.sample_rate)
    queue = SpeechQueue(
        out_rate=out_rate,
        render_rate=caps.sample_rate,
        fps=video.fps,
        lookbehind_s=caps.lookbehind_s,
        lookahead_s=caps.lookahead_s,
    )
    expected = queue.out_timeline.frames_covering(
        math.ceil(speech.samples.size * out_rate / speech.sample_rate)
    )
    batch_size = max(1, caps.batch_size)
    every = max(1, expected // 100)
    with Mp4Writer(
        path,
        width=video.width,
        height=video.height,
        fps=queue.out_timeline.fps,
        audio_rate=out_rate,
    ) as writer:
        batch: list[tuple[FrameRequest, SpeechWindow]] = []
        speech_position = 0
        for index, window in enumerate(_windows(speech, queue)):
            request = window.frame_request(
                index=index, speech_position=speech_position, expression=expression
            )
            speech_position += window.window_length
            batch.append((request, window))
            if len(batch) >= batch_size:
                _render_batch(drawer, batch, writer, compositor, backdrop)
                batch.clear()
            if index % every == 0:
                report(0.05 + 0.9 * min(1.0, index / expected), f"rendering frame {index + 1}")
        if batch:
            _render_batch(drawer, batch, writer, compositor, backdrop)
        report(0.96, "finishing the MP4")
    return writer.frames


def _windows(speech: DecodedAudio, queue: SpeechQueue) -> Iterator[SpeechWindow]:
    """The whole audio as one utterance, window by window, as the live runtime slices it."""
    chunk = max(1, int(speech.sample_rate * PUSH_CHUNK_S))
    samples = speech.samples
    for start in range(0, samples.size, chunk):
        piece = samples[start : start + chunk]
        queue.push(rtc.AudioFrame(piece.tobytes(), speech.sample_rate, 1, piece.size))
        while (window := queue.next_window()) is not None:
            yield window
    queue.end_segment()
    while (window := queue.next_window()) is not None:
        yield window


def _render_batch(
    drawer: Renderer,
    batch: list[tuple[FrameRequest, SpeechWindow]],
    writer: Mp4Writer,
    compositor: Compositor,
    backdrop: Background,
) -> None:
    pictures = drawer.render([request for request, _ in batch])
    if len(pictures) != len(batch):
        raise RuntimeError(f"renderer returned {len(pictures)} frames for {len(batch)} requests")
    for picture, (_, window) in zip(pictures, batch, strict=True):
        writer.write_video(compositor.apply(picture, backdrop))
        writer.write_audio(window.out_audio)


class _ProgressReporter:
    """Calls the caller's progress callback with fractions that never go backwards."""

    def __init__(self, callback: Progress | None) -> None:
        self._callback = callback
        self._last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        if self._callback is None:
            return
        self._last = max(self._last, min(1.0, fraction))
        self._callback(self._last, message)


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avatar_runtime.offline",
        description="Render a talking-head MP4 from an audio file and a portrait.",
    )
    parser.add_argument("--audio", type=Path, required=True, help="speech: WAV, MP3, M4A, ...")
    parser.add_argument("--out", type=Path, required=True, help="the MP4 to write")
    parser.add_argument(
        "--image",
        "--source",
        dest="source",
        type=Path,
        help="portrait image or avatar package directory (default: the bundled portrait)",
    )
    parser.add_argument("--renderer", default="meshwarp", help=", ".join(renderers.available()))
    parser.add_argument("--emotion", default="neutral", help=", ".join(EMOTIONS))
    parser.add_argument("--intensity", type=float, default=0.7)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--background", default=ORIGINAL, help="original, blur, color:#RRGGBB")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    bars: list[tqdm] = []  # made at the first report, so an early refusal prints no bar

    def progress(fraction: float, message: str) -> None:
        if not bars:
            bars.append(tqdm(total=100, file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}"))
        bars[0].set_description(message, refresh=False)
        bars[0].update(round(100 * fraction) - bars[0].n)

    started = time.perf_counter()
    try:
        result = render_talking_video(
            audio=args.audio,
            out=args.out,
            renderer=args.renderer,
            source=args.source,
            emotion=args.emotion,
            intensity=args.intensity,
            width=args.width,
            height=args.height,
            fps=args.fps,
            progress=progress,
            background=args.background,
        )
    except OfflineRenderError as error:
        for bar in bars:
            bar.close()
        print(f"{parser.prog}: error: {error.message}", file=sys.stderr)
        return 2
    for bar in bars:
        bar.close()
    elapsed = time.perf_counter() - started
    print(
        f"{result.path}: {result.frames} frames, {result.duration_s:.2f} s, "
        f"{result.width}x{result.height} at {result.fps:g} fps; rendered in {elapsed:.2f} s "
        f"(real-time factor {elapsed / max(result.duration_s, 1e-9):.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "OfflineRenderError",
    "OfflineRenderLimits",
    "RenderedVideo",
    "main",
    "render_talking_video",
]
