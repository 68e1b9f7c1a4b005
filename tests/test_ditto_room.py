"""The ditto renderer end to end: `AVATAR_RENDERER=ditto` in a real LiveKit room, and seed 004's
WebSocket flow with `renderer: "ditto"`, both on random weights at the SMALL sizes in Ditto's
published layout (tests/ditto_fixtures.py) with two LMDM sampling steps.

Random weights paint a blur, not a face, and a SMALL ditto frame still costs about a second on
a CPU (LivePortrait's feature volume and 512 output are fixed), so in the room most pictures
are repeats of the last one the runtime had: they are counted and reported, not judged. What
is checked is the plumbing: the worker loads the checkpoints, the greeting is heard, video
arrives at the room's 30 fps at the asked size; over the socket every frame of the audio comes
back, in order, followed by `complete`.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.observer import RoomObserver, VideoSample, quiet_for
from tests.ditto_fixtures import ditto_checkpoints  # noqa: F401 - a fixture
from tests.livekit_server import LiveKitServer
from tests.room_fixtures import renderer_worker, watching_room
from tests.stream_fixtures import (
    expect,
    expected_frames,
    init_message,
    jpeg_picture,
    send,
    send_audio,
    speech_pcm,
    stream_app,
    stream_settings,
    until_closed,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
    pytest.mark.skipif(
        importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed"
    ),
]

SIZE = 128
STEPS = "2"
GREETING = "Hello there, I am the ditto avatar."
FACE = (0.38, 0.5, 0.62, 0.7)
"""The mouth's part of the frame (vision/framing.py puts every portrait's face there)."""


def ditto_env(directory: Path) -> dict[str, str]:
    return {
        "AVATAR_DITTO_DIR": str(directory),
        "AVATAR_DITTO_STEPS": STEPS,
        "AVATAR_DITTO_DEVICE": "cpu",
    }


def repeated_share(frames: list[VideoSample]) -> tuple[int, float]:
    """Frames whose watched region is the same picture as the frame before, and their share."""
    same = sum(np.array_equal(a.luma, b.luma) for a, b in zip(frames, frames[1:], strict=False))
    return same, same / max(1, len(frames) - 1)


# --- seed 004's WebSocket (first: the room's worker would share the CPU) --------------------------


async def test_ditto_streams_over_the_websocket(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ditto_checkpoints: Path,  # noqa: F811 - the fixture imported above
) -> None:
    from renderers.vision import models_dir

    # The session's worker process inherits these. A cache of its own, set here rather than by
    # the module-scoped `private_cache`, which would still be set when the session's
    # livekit_server fixture looks for its binary in AVATAR_CACHE.
    monkeypatch.setenv("AVATAR_MODELS_DIR", str(models_dir()))
    monkeypatch.setenv("AVATAR_CACHE", str(tmp_path / "cache"))
    for name, value in ditto_env(ditto_checkpoints).items():
        monkeypatch.setenv(name, value)
    pcm = speech_pcm(1.0, tmp_path)
    fps = 25.0
    settings = stream_settings(tmp_path, stream_renderers=("meshwarp", "ditto"))
    started = time.monotonic()
    async with stream_app(settings) as app, app.connect() as ws:
        await expect(ws, "status")
        await send(ws, init_message(renderer="ditto", width=64, height=64))
        status = await expect(ws, "status", timeout=60)
        assert status["message"] == "Session initialized. Ready for audio chunks.", status
        assert (status["renderer"], status["width"], status["height"], status["fps"]) == (
            "ditto",
            64,
            64,
            fps,
        )
        ready = time.monotonic()
        await send_audio(ws, pcm, chunk_s=0.2)
        await send(ws, {"type": "stop"})
        messages = await until_closed(ws, timeout=90)
    done = time.monotonic()
    frames = [m for m in messages if m["type"] == "frame"]
    total = expected_frames(pcm, fps)
    assert [f["frame_id"] for f in frames] == list(range(total))
    assert messages[-1]["type"] == "complete", messages[-1]
    assert messages[-1]["total_frames"] == total, messages[-1]
    kinds = {m["type"] for m in messages}
    assert kinds <= {"frame", "progress", "complete"}, kinds
    pictures = [jpeg_picture(f["data"]) for f in frames]
    assert all(p.shape == (64, 64, 3) for p in pictures)
    print(
        f"ditto websocket: {total} frames; init {ready - started:.1f} s, "
        f"audio to complete {done - ready:.1f} s"
    )


# --- a real room ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_name(
    livekit_server: LiveKitServer,
    ditto_checkpoints: Path,  # noqa: F811 - the fixture imported above
    private_cache: Path,
) -> Iterator[str]:
    settings = {"AVATAR_GREETING": GREETING, **ditto_env(ditto_checkpoints)}
    with renderer_worker(
        livekit_server, "ditto", None, private_cache, settings, size=(SIZE, SIZE)
    ) as name:
        yield name


@pytest.fixture
async def observer(livekit_server: LiveKitServer, agent_name: str) -> AsyncIterator[RoomObserver]:
    async with watching_room(livekit_server, agent_name, FACE) as watcher:
        yield watcher


@pytest.mark.livekit
async def test_ditto_avatar_greets_in_a_real_room(
    observer: RoomObserver, record_property: pytest.RecordProperty
) -> None:
    started = time.monotonic()
    await observer.wait_for(lambda: len(observer.video) > 30, 60, "the avatar's video")
    await observer.wait_for(lambda: quiet_for(observer, 1.0), 60, "the greeting to be heard")
    spans = observer.speech_spans()
    assert spans, "the greeting was not heard"
    start, end = max(spans, key=lambda span: span[1] - span[0])
    assert end - start > 1.0, f"the greeting lasted only {end - start:.2f} s"
    assert observer.audio and observer.video
    assert {(v.width, v.height) for v in observer.video} == {(SIZE, SIZE)}
    first, last = observer.video[0].arrived, observer.video[-1].arrived
    fps = observer.fps(observer.video[15].arrived, last)  # past the subscription's first frames
    speaking_fps = observer.fps(start, end)
    speaking = [v for v in observer.video if start <= v.arrived <= end]
    repeats, share = repeated_share(speaking)
    all_repeats, all_share = repeated_share(observer.video)
    record_property("fps", round(fps, 1))
    record_property("speaking_fps", round(speaking_fps, 1))
    record_property("repeated_while_speaking", repeats)
    print(
        f"ditto room: {len(observer.video)} frames in {last - first:.1f} s, {fps:.1f} fps "
        f"delivered ({speaking_fps:.1f} while greeting); repeated pictures: {repeats} of "
        f"{len(speaking) - 1} while greeting ({100 * share:.0f} %), {all_repeats} of "
        f"{len(observer.video) - 1} in all ({100 * all_share:.0f} %); "
        f"{time.monotonic() - started:.1f} s"
    )
    assert fps >= 25, f"only {fps:.1f} fps delivered after the first frames"
    assert speaking_fps >= 25, f"only {speaking_fps:.1f} fps while greeting"
    assert all_repeats < len(observer.video) - 1, "the picture never changed"
    assert np.mean([v.luma.mean() for v in observer.video]) > 30
