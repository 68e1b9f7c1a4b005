"""One avatar session as its own process, the way a worker runs each job: joins a room,
renders with a given renderer and publishes (VP8 + Opus encoding included) while speech plays
in a loop, then prints its own cost as one JSON line.

    python -m bench.avatar_session --url ws://... --room r1 --renderer meshwarp --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import numpy as np
from livekit import api, rtc
from livekit.agents.voice.avatar import QueueAudioOutput

from avatar_runtime import AvatarPublisher, AvatarVideoGenerator, RuntimeOptions
from renderers import VideoFormat, create

from .sync_compare import synthesize

SPEECH = "Good morning. I can talk for as long as you like, and my face follows every word."


async def run(args: argparse.Namespace, speech: list[rtc.AudioFrame]) -> dict:
    token = (
        api.AccessToken(args.api_key, args.api_secret)
        .with_identity(f"avatar-{args.room}")
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=args.room))
        .to_jwt()
    )
    room = rtc.Room()
    await room.connect(args.url, token)
    video = VideoFormat(args.width, args.height, 30)
    renderer = create(args.renderer, video)
    renderer.load(None)
    generator = AvatarVideoGenerator(renderer, RuntimeOptions(args.width, args.height, 30, 24000))
    audio = QueueAudioOutput(sample_rate=24000)
    publisher = AvatarPublisher(room, audio_recv=audio, video_gen=generator)
    await publisher.start()
    await asyncio.sleep(2.0)  # warm up: tracks published, encoder running

    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    frames_before = generator.stats.frames
    repeated_before = generator.stats.repeated_frames
    while time.perf_counter() - start < args.seconds:
        for frame in speech:
            await audio.capture_frame(frame)
        audio.flush()
        duration = sum(f.duration for f in speech)
        await asyncio.sleep(duration + 0.5)  # speak, then a short pause
    elapsed = time.perf_counter() - start
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    stats = generator.stats
    cpu = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
    result = {
        "renderer": args.renderer,
        "size": f"{args.width}x{args.height}",
        "fps": round((stats.frames - frames_before) / elapsed, 2),
        "repeated_frames": stats.repeated_frames - repeated_before,
        "render_ms_p50": round(float(np.percentile(list(stats.render_ms), 50)), 2),
        "cpu_percent": round(100.0 * cpu / elapsed, 1),
        "max_rss_mb": round(end_cpu.ru_maxrss / 1024, 1),
        "seconds": round(elapsed, 1),
    }
    await publisher.aclose()
    await room.disconnect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.avatar_session")
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--renderer", default="meshwarp")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    speech = synthesize(SPEECH)
    print(json.dumps(asyncio.run(run(args, speech))), flush=True)


if __name__ == "__main__":
    main()
