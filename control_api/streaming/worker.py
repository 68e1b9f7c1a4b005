"""One streaming session's renderer: `python -m control_api.streaming.worker --tmp DIR`.

Its session (session.py) writes on its stdin and reads its stdout, one frame each way at a
time (render_service/protocol.py: JSON and bytes). The worker says hello, then reads one
`init` (renderer, size, fps, the emotion runs, and the source's bytes), writes the source into
DIR (the session's own temporary folder, removed by the session however the worker ends),
checks that it is a picture or a video it can read, loads the renderer with it
(`Renderer.load`) and answers `ready`, or `error` with the renderer's code (`no_face`, ...)
and exits.

Then it renders as offline renders do (avatar_runtime/offline.py): the audio of `audio`
messages (PCM int16 mono at 16 kHz) goes into a `SpeechQueue` as one utterance, which cuts it
into per-frame windows with the renderer's look-behind and look-ahead; each window becomes a
`FrameRequest` (its frame's emotion from the runs), rendered in batches of the renderer's
`batch_size`, and each frame goes back as `frame` with its JPEG and exactly its own window of
the audio (16 kHz int16). Every message read is acknowledged (`ack`, after the frames it made
ready were sent), which is how the session tells a worker that owes frames from an idle one.
`end` flushes the utterance (the last window padded with silence) and is answered `done`.
A reader thread takes the input off the pipe while frames render; when input is waiting, the
frames wait for a full batch (audio faster than real time renders as fast as the renderer can),
else the windows ready go at once (audio in real time is rendered as it arrives).

A renderer that fails mid-stream is answered `error` (its code, else `render_failed` with the
traceback on stderr) and the worker exits. Anything printed goes to stderr: stdout carries
frames only. One BLAS thread, as offline renders use.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..render_service import protocol
from ..render_service.worker import claim_stdout, encode
from .emo import Run, Schedule

log = logging.getLogger("control_api.streaming")

AUDIO_RATE = 16000
INBOX = 64
"""Messages read ahead of the renderer; past it the pipe, then the session, waits."""


class Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Answers:
    """The frames going back, written whole (the reader thread never writes)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def send(self, message: dict[str, Any], payload: bytes = b"") -> None:
        self._stream.write(protocol.pack(message, payload))
        self._stream.flush()

    def error(self, code: str, message: str) -> None:
        self.send({"type": "error", "code": code, "message": message})


# --- loading ----------------------------------------------------------------------------------


def load(init: dict[str, Any], source: bytes, tmp: Path) -> Any:
    """The renderer `init` names, loaded with `source`; Refusal for every way it cannot be."""
    import renderers
    from renderers.vision.portrait import load_image
    from renderers.vision.video import UnsupportedVideoError, VideoDecodeError, probe_video

    name = str(init["renderer"])
    reason = renderers.unavailable_reason(name)
    if reason is not None:
        raise Refusal("renderer_unavailable", f"renderer '{name}' cannot run here: {reason}")
    path = tmp / f"source{init['suffix']}"
    path.write_bytes(source)
    try:
        if init["kind"] == "image":
            load_image(source)  # the picture decodes (and is not a decompression bomb)
        else:
            probe_video(path)
    except renderers.RendererError as error:
        raise Refusal(error.code, error.message) from None
    except UnsupportedVideoError as error:
        raise Refusal(
            "unsupported_source", f"the source is no video this service can read ({error.reason})"
        ) from None
    except VideoDecodeError as error:
        raise Refusal("corrupt_video", f"the source video cannot be decoded: {error}") from None
    video = renderers.VideoFormat(int(init["width"]), int(init["height"]), float(init["fps"]))
    drawer = renderers.create(name, video)
    steps = (init.get("options") or {}).get("sampling_timesteps")
    try:
        if steps is not None:
            drawer.set_sampling_steps(int(steps))
        drawer.load(path)
    except renderers.RendererError as error:
        drawer.close()
        raise Refusal(error.code, error.message) from None
    except BaseException:
        drawer.close()
        raise
    return drawer


# --- streaming --------------------------------------------------------------------------------


class Stream:
    """The session's one utterance, cut into windows and rendered."""

    def __init__(self, drawer: Any, runs: Sequence[Run], answers: _Answers) -> None:
        from avatar_runtime.speech import SpeechQueue

        self.drawer = drawer
        caps = drawer.capabilities
        self.batch_size = max(1, int(caps.batch_size))
        self.queue = SpeechQueue(
            out_rate=AUDIO_RATE,
            render_rate=caps.sample_rate,
            fps=drawer.video.fps,
            lookbehind_s=caps.lookbehind_s,
            lookahead_s=caps.lookahead_s,
        )
        self.schedule = Schedule(runs)
        self.answers = answers
        self.pending: list[Any] = []
        self.frames = 0
        self.speech_position = 0

    def push(self, pcm: bytes) -> None:
        from livekit import rtc

        samples = len(pcm) // 2
        if samples:
            self.queue.push(rtc.AudioFrame(pcm[: samples * 2], AUDIO_RATE, 1, samples))
        self._collect()

    def end(self) -> None:
        self.queue.end_segment()
        self._collect()
        self.render(everything=True)
        self.queue.pop_empty_end()

    def _collect(self) -> None:
        while (window := self.queue.next_window()) is not None:
            self.pending.append(window)

    def render(self, *, everything: bool) -> None:
        """Render the windows ready: full batches, and the rest too when `everything`."""
        from renderers import Expression

        while len(self.pending) >= self.batch_size or (everything and self.pending):
            batch, self.pending = (
                self.pending[: self.batch_size],
                self.pending[self.batch_size :],
            )
            requests: list[Any] = []
            for window in batch:
                emotion, intensity = self.schedule.at(self.frames + len(requests))
                requests.append(
                    window.frame_request(
                        index=self.frames + len(requests),
                        speech_position=self.speech_position,
                        expression=Expression(emotion, intensity),
                    )
                )
                self.speech_position += window.window_length
            started = time.perf_counter()
            pictures = self.drawer.render(requests)
            render_ms = (time.perf_counter() - started) * 1000.0 / len(batch)
            if len(pictures) != len(batch):
                raise RuntimeError(
                    f"renderer returned {len(pictures)} frames for {len(batch)} requests"
                )
            for picture, window in zip(pictures, batch, strict=True):
                jpeg = encode(np.asarray(picture)[..., :3], "jpeg")
                audio = np.ascontiguousarray(window.out_audio, dtype=np.int16).tobytes()
                self.answers.send(
                    {
                        "type": "frame",
                        "id": self.frames,
                        "jpeg": len(jpeg),
                        "renderMs": round(render_ms, 2),
                    },
                    jpeg + audio,
                )
                self.frames += 1


def _read_into(requests: IO[bytes], inbox: queue.Queue[Any]) -> None:
    """The reader thread: frames off the pipe into `inbox`; None at its end."""
    try:
        while (frame := protocol.read_sync(requests)) is not None:
            inbox.put(frame)
    except (protocol.ProtocolError, OSError, ValueError) as error:
        inbox.put(error)
        return
    inbox.put(None)


def serve(requests: IO[bytes], stream_out: IO[bytes], tmp: Path) -> int:
    answers = _Answers(stream_out)
    answers.send({"type": "hello", "hello": True, "pid": os.getpid()})
    first = protocol.read_sync(requests)
    if first is None:
        return 0
    init, source = first
    if init.get("type") != "init":
        answers.error("internal_error", "the worker expected an init first")
        return 2
    try:
        drawer = load(init, source, tmp)
    except Refusal as refusal:
        answers.error(refusal.code, refusal.message)
        return 0
    except Exception:
        traceback.print_exc()
        answers.error("render_failed", "the renderer failed loading the source")
        return 1
    caps = drawer.capabilities
    answers.send(
        {
            "type": "ready",
            "batchSize": caps.batch_size,
            "lookaheadS": caps.lookahead_s,
            "lookbehindS": caps.lookbehind_s,
            "sampleRate": caps.sample_rate,
        }
    )
    runs = [Run(int(start), str(emotion), float(value)) for start, emotion, value in init["emo"]]
    inbox: queue.Queue[Any] = queue.Queue(maxsize=INBOX)
    threading.Thread(target=_read_into, args=(requests, inbox), daemon=True).start()
    stream = Stream(drawer, runs, answers)
    try:
        return _loop(stream, inbox, answers)
    except Exception as error:
        from renderers import RendererError

        if isinstance(error, RendererError):
            answers.error(error.code, error.message)
        else:
            traceback.print_exc()
            answers.error("render_failed", "the renderer failed while rendering")
        return 1
    finally:
        drawer.close()


def _loop(stream: Stream, inbox: queue.Queue[Any], answers: _Answers) -> int:
    while True:
        items = [inbox.get()]
        while True:  # everything already waiting: faster-than-real-time input fills batches
            try:
                items.append(inbox.get_nowait())
            except queue.Empty:
                break
        handled = 0
        for item in items:
            if item is None:
                return 0  # the session closed our input: stop
            if isinstance(item, Exception):
                log.error("stream worker: %s; stopping", item)
                return 2
            message, payload = item
            kind = message.get("type")
            if kind == "audio":
                stream.push(payload)
            elif kind == "end":
                stream.end()
                answers.send({"type": "done", "frames": stream.frames})
            handled += 1
            stream.render(everything=False)  # full batches as soon as they are ready
        stream.render(everything=inbox.qsize() == 0)  # the rest, unless more input waits
        answers.send({"type": "ack", "count": handled, "frames": stream.frames})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control_api.streaming.worker")
    parser.add_argument("--tmp", type=Path, required=True, help="the session's temporary folder")
    parser.add_argument("--session", default="", help="the session's id, for the log")
    args = parser.parse_args(argv)
    answers = claim_stdout()
    session = f" session_id={args.session}" if args.session else ""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[%(process)d]{session}: %(message)s",
    )
    from threadpoolctl import threadpool_limits

    # Imported before the hello, so that loading the source is all the init waits for.
    import avatar_runtime.speech  # noqa: F401
    import renderers  # noqa: F401

    try:
        # One BLAS thread, as offline renders (renderers call BLAS for small products).
        with threadpool_limits(limits=1, user_api="blas"):
            return serve(sys.stdin.buffer, answers, args.tmp)
    except protocol.ProtocolError as error:
        log.error("stream worker: %s; stopping", error)
        return 2
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())
