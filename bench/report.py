"""Render benchmark results as Markdown tables inside docs/benchmarks.md.

Each benchmark owns one block between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers,
so benchmarks added later replace only their own block.
"""

from __future__ import annotations

import json
from pathlib import Path

HEADER = """# Benchmarks

Written by `make bench` (`python -m bench`); the raw numbers are in `bench/results/*.json`.
Everything runs on loopback on the development machine, measured by real subscribers through a
real livekit-server. Goals come from the issues; a number that misses its goal is shown as is.
"""


def _table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def foundation_section(results: dict) -> str:
    machine = results["machine"]
    parts = [
        "## Foundation: sync, fps, latency and cost through the SFU (`testcard`)",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs, "
        f"{machine['memory_gb']} GiB, Python {machine['python']}. 512x512 at 30 fps, "
        "in-process avatar, piper TTS, no GPU.",
        "",
        "Goals: delivered fps >= 29.5; audio/video offset within +-40 ms; runtime-added latency "
        "<= one frame (33 ms) plus render time; no drift over 10 minutes.",
        "",
        "### Publisher side by side (same speech, same testcard frames)",
        "",
        "Offset is how much later a frame arrives than its own audio (negative: earlier), "
        "measured at the subscriber by matching each frame's stamped loudness with the "
        "received audio.",
        "",
        _table(
            [
                "publisher",
                "offset per utterance (ms)",
                "mean offset (ms)",
                "delivered fps",
                "repeated frames",
            ],
            [
                [
                    p["publisher"],
                    ", ".join(f"{o:+.0f}" for o in p["offset_ms_per_utterance"]),
                    f"{p['offset_ms_mean']:+.0f}",
                    p["delivered_fps"],
                    p["repeated_frames"],
                ]
                for p in results.get("publishers", [])
            ],
        ),
        "",
        "### Sessions on one worker (agent + avatar in the same job process)",
        "",
        _table(
            [
                "sessions",
                "fps min / mean",
                "offset (ms)",
                "runtime first-frame latency (ms)",
                "chat to first speech frame (ms)",
                "render p50 (ms)",
                "repeated frames",
                "CPU per session",
                "memory (PSS) per session",
            ],
            [
                [
                    s["sessions"],
                    f"{s['fps_min']} / {s['fps_mean']}",
                    ", ".join(f"{o:+.0f}" for o in s["offset_ms"]),
                    ", ".join(str(v) for v in s["runtime_first_frame_latency_ms"]),
                    s["chat_to_first_frame_ms"],
                    ", ".join(str(v) for v in s["render_ms_p50"]),
                    ", ".join(str(v) for v in s["repeated_frames"]),
                    f"{s['cpu_percent_per_session']}%",
                    f"{s.get('pss_mb_per_session', s.get('rss_mb_per_session'))} MB",
                ]
                for s in results.get("sessions", [])
            ],
        ),
        "",
        *(
            [
                f"With {results['sessions_failed']['sessions']} sessions the run failed: "
                f"{results['sessions_failed']['error']}.",
                "",
            ]
            if results.get("sessions_failed")
            else []
        ),
        "*Runtime first-frame latency*: from an utterance's first TTS audio reaching the "
        "runtime to its first frame leaving it (the avatar's own `avatar.stats`). *Chat to "
        "first speech frame*: from sending the chat text to the first speech frame arriving at "
        "the subscriber, so it includes piper synthesizing the first sentence. CPU is the "
        "worker's process tree (100% = one core), including TTS, VP8 encoding and Opus.",
    ]
    soak = results.get("soak")
    if soak:
        parts += [
            "",
            f"### Drift: {soak['minutes']:g} minute(s) of continuous speech",
            "",
            _table(
                ["offset per minute (ms)", "drift (max - min)", "delivered fps", "repeated frames"],
                [
                    [
                        ", ".join(f"{o:+.0f}" for o in soak["offset_ms_per_minute"]),
                        f"{soak['drift_ms']} ms",
                        soak["delivered_fps"],
                        soak["repeated_frames"],
                    ]
                ],
            ),
        ]
    return "\n".join(parts) + "\n"


def meshwarp_section(results: dict) -> str:
    machine = results["machine"]
    parts = [
        "## meshwarp: render speed and sessions per machine",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs. Render-only: one process "
        "pinned to one core (`taskset -c 0`, one BLAS thread), speech and silence alternating, "
        "an emotion on. Sessions: each a separate process (as the worker runs jobs) rendering, "
        "encoding VP8 + Opus and publishing through the SFU while speech plays in a loop.",
        "",
        "Goals: >= 200 fps at 512x512 and >= 60 fps at 1280x720 render-only on one core; "
        ">= 4 sessions at 30 fps on this 2-core machine.",
        "",
        _table(
            ["size", "render-only fps (one core)", "ms per frame"],
            [[r["size"], r["fps"], r["ms_per_frame"]] for r in results["render_only"]],
        ),
        "",
        _table(
            [
                "sessions",
                "min fps",
                "repeated frames",
                "CPU per session",
                "render p50 (ms)",
                "max RSS (MB)",
                "sustained at 30 fps",
            ],
            [
                [
                    s["sessions"],
                    s["fps_min"],
                    f"{100 * s['repeated_share']:.2f}%",
                    f"{s['cpu_percent_per_session']}%",
                    s["render_ms_p50"],
                    s["max_rss_mb"],
                    "yes" if s["sustained"] else "no",
                ]
                for s in results["sessions"]
            ],
        ),  # fmt: skip
        "",
        "CPU per session includes rendering, VP8 encoding of 512x512 at 30 fps, Opus, and the "
        "LiveKit client; 100% = one core.",
    ]
    return "\n".join(parts) + "\n"


def control_api_section(results: dict) -> str:
    machine = results["machine"]

    def load_rows(name: str, label: str) -> list[list[object]]:
        run = results[name]
        return [
            [
                label,
                kind,
                run["target_rps"],
                run["achieved_rps"],
                run["clients"],
                lat["p50"],
                lat["p99"],
                lat["max"],
                ", ".join(f"{k}: {v}" for k, v in run["statuses"].items()),
            ]
            for kind, lat in run["latency_ms"].items()
        ]

    sessions = results["sessions"]
    change = results["change_to_frame"]
    parts = [
        "## Control API: request latency, session creation, change to frame",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs, everything on loopback "
        "and on this machine at once: livekit-server, `python -m control_api` (one process, "
        "access log off), the agent worker rendering meshwarp at 512x512, the load generator "
        "and a LiveKit viewer. Latency is from each request's scheduled time (open loop), so "
        "queueing counts.",
        "",
        "Goal: p99 < 20 ms at 1000 requests/s from 200 clients.",
        "",
        _table(
            [
                "load",
                "request",
                "target/s",
                "achieved/s",
                "clients",
                "p50 ms",
                "p99 ms",
                "max ms",
                "statuses",
            ],
            load_rows("get_state", "GET only") + load_rows("mixed", "90% GET, 10% emotion"),
        ),  # fmt: skip
        "",
        "The mixed load ran "
        + str(len(next(iter(results.get("mixed_p99_ms", {"": [0]}).values()))))
        + " times; the table shows the median run. p99 of every run: "
        + "; ".join(
            f"{kind} {', '.join(str(v) for v in values)} ms"
            for kind, values in results.get("mixed_p99_ms", {}).items()
        )
        + ".",
        "",
        f"Sessions: {sessions['created_per_s']} created per second "
        f"({sessions['sessions']} sessions, {sessions['concurrency']} at a time; each is a room, "
        f"an agent dispatch and the control API's own participant joining; create p50 "
        f"{sessions['create_ms']['p50']} ms, p99 {sessions['create_ms']['p99']} ms), "
        f"{sessions['deleted_per_s']} deleted per second.",
        "",
        _table(
            ["change", "trials seen", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    "background (compositor)",
                    f"{change['background_seen']}/{change['trials']}",
                    change["background_ms"]["p50"],
                    change["background_ms"]["p99"],
                    change["background_ms"]["max"],
                ],
                [
                    "emotion (renderer)",
                    f"{change['emotion_seen']}/{change['trials']}",
                    change["emotion_ms"]["p50"],
                    change["emotion_ms"]["p99"],
                    change["emotion_ms"]["max"],
                ],
            ],
        ),  # fmt: skip
        "",
        "Change to frame: from the HTTP response to the first frame a LiveKit viewer receives "
        "that shows the change, so VP8 encoding, the SFU, decoding and the viewer's jitter "
        "buffer are included. Goal: < 100 ms. The background is composited as each frame is "
        "sent; an emotion is read as each picture's render starts, which (with the audio "
        "handed out a queue ahead of its picture) is when that picture is due, and eases in "
        "over ~300 ms (counted at a quarter of the way). Each emotion request is an RPC round "
        "trip through livekit-server to the avatar, whose renders and attribute updates share "
        "the same two cores, so the mixed load's p99 varies from run to run.",
    ]
    return "\n".join(parts) + "\n"


def offline_render_section(results: dict) -> str:
    machine = results["machine"]
    parts = [
        "## Offline renders: audio file + portrait to MP4",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs: "
        "`avatar_runtime.offline.render_talking_video` on "
        f"{results['audio_seconds']:g} s of speech-like audio ({results['audio_rate']} Hz WAV), "
        "emotion on, H.264 (`veryfast`, CRF 23) + AAC, each in a fresh process after a 1 s "
        "warm-up render, the fastest of several renders (all listed: the machine is shared). "
        "Everything is counted: decoding, resampling, rendering, compositing, encoding and "
        "writing the file.",
        "",
        "Goal: faster than real time (real-time factor = render seconds / audio seconds < 1) "
        "for meshwarp at 512x512.",
        "",
        _table(
            [
                "renderer",
                "size",
                "cores",
                "render s",
                "real-time factor",
                "every run",
                "frames/s",
                "MP4 kbit/s",
            ],
            [
                [
                    r["renderer"],
                    r["size"],
                    r["cores"],
                    r["render_s"],
                    r["realtime_factor"],
                    ", ".join(str(f) for f in r.get("realtime_factor_runs", [])),
                    r["fps"],
                    r["mp4_kbit_s"],
                ]
                for r in results["renders"]
            ],
        ),
        "",
        "*one core*: pinned with `taskset -c 0` and one BLAS thread, what each of several "
        "concurrent render jobs gets on a small machine; *all cores*: x264 uses its own threads.",
    ]
    return "\n".join(parts) + "\n"


def jobs_section(results: dict) -> str:
    machine = results["machine"]
    clip = results["clip"]
    parts = [
        "## Offline jobs: preparation throughput under the concurrency cap",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs: prepare jobs "
        f"({results['model']}) of one {clip['seconds']:g} s {clip['size']} clip at "
        f"{clip['fps']} fps, submitted together with `POST /run` to the control API on "
        "loopback, the video served by a loopback file server. Each job is a worker process: "
        "start-up, download, face tracking, package writing and installing are all counted. "
        "Latency is submit to completed; processing is first start to completed.",
        "",
        _table(
            [
                "concurrency",
                "jobs",
                "wall s",
                "jobs/min",
                "mean latency s",
                "mean processing s",
                "most running at once",
            ],
            [
                [
                    r["concurrency"],
                    r["jobs"],
                    r["wall_s"],
                    r["jobs_per_min"],
                    r["mean_latency_s"],
                    r["mean_processing_s"],
                    r["max_running_seen"],
                ]
                for r in results["runs"]
            ],
        ),
    ]
    return "\n".join(parts) + "\n"


def preparation_section(results: dict) -> str:
    machine, video = results["machine"], results["video"]
    parts = [
        "## Avatar preparation: training video to avatar package",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs: "
        "`renderers.preparation.prepare_avatar_package` on a generated "
        f"{video['seconds']:g} s {video['size']} {video['fps']} fps talking-head video (H.264), "
        f"each run in a fresh process, {results['repeats']} runs per row (the median shown, "
        "all listed). Counted: probing, face detection (BlazeFace on ~5 frames a second, more "
        "where the face moves), decoding twice, PNG encoding of every frame and its face crop on "
        "a thread pool, and writing the tar. The load average shows how busy the shared "
        "machine was with other work meanwhile.",
        "",
        f"Goal: <= {results['goal_s']:g} s for wav2lip with 96 px crops on this 2-core machine.",
        "",
        _table(
            [
                "package",
                "seconds (median)",
                "all runs (s)",
                "CPU seconds",
                "frames/s",
                "face pass / write pass (s)",
                "peak memory (MB)",
                "package (MB)",
                "load average",
            ],
            [
                [
                    r["model"] + (f" {r['face_size']} px" if r["face_size"] else ""),
                    r["seconds"],
                    ", ".join(str(v) for v in r["seconds_all"]),
                    r["cpu_seconds"],
                    r["frames_per_s"],
                    f"{r['stages_s'].get('detecting faces', 0)} / "
                    f"{round(r['seconds'] - r['stages_s'].get('detecting faces', 0), 2)}",
                    r["peak_rss_mb"],
                    r["package_mb"],
                    r["load_average_max"],
                ]
                for r in results["runs"]
            ],
        ),  # fmt: skip
        "",
        "PNG deflate: " + ", ".join(sorted({r["deflate"] for r in results["runs"]})) + " "
        "(`isal`: ISA-L, about 5x zlib's speed at level 1 for the same size).",
    ]
    return "\n".join(parts) + "\n"


def wav2lip_section(results: dict) -> str:
    machine = results["machine"]
    batches = sorted({int(b) for r in results["networks"] for b in r.get("fps", {})})
    network_rows = []
    for r in results["networks"]:
        if "error" in r:
            network_rows.append([r["backend"], r["device"], "-", "-", *["-"] * len(batches)])
            continue
        fps = {int(b): v for b, v in r["fps"].items()}
        network_rows.append(
            [
                r["backend"],
                r["device"],
                r["precision"],
                r["load_s"],
                *[fps.get(b, "-") for b in batches],
            ]
        )
    parts = [
        f"## wav2lip: network and renderer speed ({results['model_size']} px)",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs (no GPU unless a CUDA row "
        "shows), with a checkpoint of random weights in the published layout (speed does not "
        "depend on the weights). Network: `FaceGenerator.predict` alone, frames per second at "
        "each batch size; load = checkpoint load plus any ONNX export / TensorRT build.",
        "",
        _table(
            [
                "back end",
                "device",
                "precision",
                "load (s)",
                *[f"fps at batch {b}" for b in batches],
            ],
            network_rows,
        ),
        "",
        "Renderer: `Wav2LipRenderer.render` at 512x512 on an utterance cut by the runtime's "
        "SpeechQueue at 30 fps, every frame through the network (silence gating off): streaming "
        "mel, network, paste-back with colour matching. First batch: a new utterance's first "
        "`batch` frames, request to pictures (what the first frame waits for). Idle frames "
        "skip the network.",
        "",
        _table(
            [
                "back end",
                "batch",
                "fps",
                "ms/frame",
                "first batch (ms)",
                "idle fps",
                "sessions at 30 fps",
            ],
            [
                [
                    r["backend"],
                    r["batch"],
                    r["fps"],
                    r["ms_per_frame"],
                    r["first_batch_ms"],
                    r["idle_fps"],
                    r["sessions_at_30fps"],
                ]
                for r in results["renderers"]
            ],
        ),
        "",
        "LiveTalking's published figures (wav2lip256, inference only): "
        + ", ".join(f"{v} fps {k}" for k, v in results["livetalking"].items())
        + ". Sessions per GPU here: "
        + (
            ", ".join(f"{k}: {v}" for k, v in results["sessions_per_gpu"].items())
            if results["sessions_per_gpu"]
            else "no GPU on this machine"
        )
        + ".",
    ]
    return "\n".join(parts) + "\n"


def library_section(results: dict) -> str:
    machine = results["machine"]
    modes = results["modes"]
    labels = {"inprocess": "in-process", "remote": "remote (avatar worker process)"}
    return (
        "\n".join(
            [
                "## AvatarSession from your own agent",
                "",
                f"Measured {results['started']} on {machine['cpu_count']} CPUs "
                "(`python -m bench --only library`): a user's AgentSession (piper voice) with "
                f"an `AvatarSession` (meshwarp, {results['size']}), seen by a viewer in the "
                f"room; medians of {results['rounds']} fresh rooms per mode. Join is "
                "livekit-agents' own `AvatarMetrics` (start until the avatar's video is "
                "published); first audio is `session.say()` until the viewer hears it (piper "
                "synthesis included); the control is "
                "`await avatar.set_emotion()`; interrupt to silence is "
                "`await session.interrupt()` until the viewer hears no more speech.",
                "",
                _table(
                    [
                        "mode",
                        "join (ms)",
                        "worst join (ms)",
                        "first audio (ms)",
                        "set_emotion (ms)",
                        "interrupt to silence (ms)",
                    ],
                    [
                        [
                            labels.get(mode, mode),
                            m["join_ms"],
                            m["max_join_ms"],
                            m["first_audio_ms"],
                            m["control_ms"],
                            m["interrupt_to_silence_ms"],
                        ]
                        for mode, m in modes.items()
                    ],
                ),
                "",
                "Remote join includes the dispatch: LiveKit hands the job to the avatar worker, "
                "which starts a job process, loads the portrait (its rig cached by content "
                "hash) and publishes.",
            ]
        )
        + "\n"
    )


def sync_section(results: dict) -> str:
    """Lip sync and latency as an independent viewer measures them (bench/sync.py)."""
    machine = results["machine"]
    reference = results["content_reference"]
    rows = []
    for run in results["runs"]:
        for index, session in enumerate(run["per_session"]):
            sentences = session["sentences"]
            lags = [s["lag_ms"] for s in sentences]
            audio_jb = session["audio_jitter_buffer_ms"] or {}
            video_jb = session["video_jitter_buffer_ms"] or {}
            rows.append(
                [
                    "on" if run["sync_streams"] else "off (LiveKit default)",
                    run["sessions"],
                    index + 1,
                    session["lag_ms"],
                    ", ".join("-" if v is None else f"{v:+.0f}" for v in lags),
                    f"{audio_jb.get('min')}-{audio_jb.get('max')} ({audio_jb.get('median')})",
                    f"{video_jb.get('min')}-{video_jb.get('max')} ({video_jb.get('median')})",
                    ", ".join(f"{s['say_to_first_audio_ms']:.0f}" for s in sentences),
                ]
            )
    parts = [
        "## Sync and latency as an independent viewer measures them",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs (`python -m bench --only "
        "sync`): the agent worker (meshwarp, piper) serving each session, watched by a viewer "
        "that uses only the livekit SDK: the mouth's opening in the received pictures (a dark "
        "area in the mouth box found once with MediaPipe's face mesh) against the received "
        "audio's loudness, nothing from the testcard or the bench's observer. Lag: positive "
        "when a picture is shown after its sound. Rooms with and without `sync_streams` "
        "(receivers lip-sync only tracks of one stream; the avatar publishes both in stream "
        "`avatar`). Sessions run at once; the machine is shared, so spreads are shown.",
        "",
        f"Reference without any transport (an offline MP4 of the same renderer and speech): "
        f"{reference['lag_ms']:+.0f} ms (correlation {reference['correlation']}); that is the "
        "renderer's own motion, so a viewer in perfect sync measures about this.",
        "",
        "Goal: the offset within +-40 ms of the reference under load (3-4 sessions).",
        "",
        _table(
            [
                "sync_streams",
                "sessions",
                "session",
                "session lag (ms)",
                "lag per sentence (ms)",
                "audio jitter buffer min-max (median) ms",
                "video jitter buffer min-max (median) ms",
                "say to first audible audio per sentence (ms)",
            ],
            rows,
        ),
    ]
    tts = results.get("tts_first_audio")
    if tts:
        parts += [
            "",
            "Time to first audio out of the local voice (PiperTTS alone, text pushed whole as "
            "`session.say` does; goal < 300 ms whatever the length):",
            "",
            _table(
                ["text", "characters", "median (ms)", "every run (ms)"],
                [
                    [label, t["chars"], t["median_ms"], ", ".join(f"{v:.0f}" for v in t["ms"])]
                    for label, t in tts.items()
                ],
            ),
        ]
    startup = results.get("startup")
    if startup:
        parts += [
            "",
            "From `POST /avatars` to the first video frame (control API, agent worker in dev "
            "mode, a viewer with the answer's token), medians in ms from the request:",
            "",
            _table(["step", "median (ms)"], [[k, v] for k, v in startup["median_ms"].items()]),
        ]
    return "\n".join(parts) + "\n"


def knee_section(results: dict) -> str:
    """Sessions to the knee with independent viewers (bench/knee.py)."""
    machine = results["machine"]
    goal = results["goal"]
    rows = [
        [
            step["sessions"],
            ", ".join(f"{v:.2f}" for v in step["fps_mean"]),
            ", ".join(f"{v:.0f}" for v in step["fps_worst_second"]),
            ", ".join("-" if v is None else f"{v:+.0f}" for v in step["offset_ms"]),
            f"{step['cpu_percent_per_session']}%",
            step["pss_mb_per_session"],
            "yes" if step["passed"] else "no",
        ]
        for step in results["steps"]
    ]
    parts = [
        "## Sessions to the knee (meshwarp, end to end)",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs (`python -m bench "
        "--only knee`): the agent worker (`python -m agent dev`, meshwarp, piper) serving "
        "every session as `make demo` does, each session watched by its own independent "
        "viewer (`bench/viewer.py`: the livekit SDK decoding every frame, lips timed from "
        "the pictures against the audio's loudness). Sessions are added one at a time; at "
        "each step all of them speak at once. A step passes when every viewer gets at "
        f"least {goal['min_fps']} fps and its lips stay within "
        f"+-{goal['max_abs_offset_ms']:.0f} ms of where the renderer itself puts them "
        "(offset = measured lag minus the "
        f"renderer's own {results['content_reference']['lag_ms']:+.0f} ms on an offline "
        "MP4). Viewers, livekit-server and the worker share the machine.",
        "",
        f"**Knee: {results['knee_sessions']} session(s)** on this machine.",
        "",
        _table(
            [
                "sessions",
                "fps per viewer (mean)",
                "fewest frames in a second",
                "offset per session (ms)",
                "worker CPU per session",
                "worker PSS per session (MB)",
                "passed",
            ],
            rows,
        ),
        "",
        "CPU per session: the worker's process tree (rendering, VP8 and Opus encoding, "
        "piper), 100% = one core.",
    ]
    return "\n".join(parts) + "\n"


def liveportrait_section(results: dict) -> str:
    machine = results["machine"]
    modules = results["modules"]
    names = (
        "appearance", "motion", "warp", "spade", "warp_decode", "stitch", "retarget_lip",
        "retarget_eye",
    )  # fmt: skip
    module_rows = []
    for row in modules["backends"]:
        if "error" in row:
            module_rows.append([row["backend"], "-", row["error"], *["-"] * len(names)])
            continue
        for batch, timing in row["batches"].items():
            module_rows.append(
                [
                    row["backend"],
                    batch,
                    row["load_s"],
                    *[timing.get(name, "-") for name in names],
                    timing.get("warp_decode_fps", "-"),
                ]
            )
    renderer_rows = []
    for row in results["renderer"]:
        if "error" in row:
            renderer_rows.append([row["backend"], row["error"], "-", "-", "-", "-"])
            continue
        fps = ", ".join(f"{v} (batch {b})" for b, v in row["fps"].items())
        renderer_rows.append(
            [
                row["backend"],
                fps,
                row["ms_per_frame"],
                row["load_ms"],
                row["first_frame_ms"],
                f"{100 * row['realtime_share']:.1f} %",
            ]
        )
    published = [
        [name, figures.get("ms_per_frame", "-"), figures.get("fps", "-")]
        for name, figures in results["published"].items()
    ]
    parts = [
        "## liveportrait: network and renderer speed",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPUs with random weights at "
        "the published sizes (speed does not depend on the weights); "
        f"{results['gpu']}. Networks: milliseconds per call (median of {modules['repeats']} "
        "after a warm-up) at 256x256 input, W and G also timed apart; warp_decode is the two "
        "fused, what runs per frame. load = engine build (checkpoint load, and the ONNX export "
        "on a first run).",
        "",
        _table(
            ["back end", "batch", "load (s)", *[f"{n} (ms)" for n in names], "warp+decode fps"],
            module_rows,
        ),
        "",
        "Renderer: `LivePortraitRenderer.render` at 512x512, per frame: driving keypoints, lip "
        "and eye retargeting, stitching, warp, decode and the feathered paste-back. Load: a new "
        "portrait's face mesh, crop, appearance features and keypoints; first frame: its first "
        "picture after that.",
        "",
        _table(
            ["back end", "fps", "ms/frame (best)", "load (ms)", "first frame (ms)", "of 30 fps"],
            renderer_rows,
        ),
        "",
        "Published figures, for comparison (GPU):",
        "",
        _table(["system", "ms/frame", "fps"], published),
        "",
    ]
    return "\n".join(parts)


def streaming_section(results: dict) -> str:
    machine = results["machine"]
    seed = results["seed"]
    size = "x".join(str(v) for v in results["size"])
    fps = results["fps_target"]

    def latency(row: dict) -> str:
        lat = row["latency_ms"]
        return f"{lat['p50']} / {lat['p95']} / {lat['max']}"

    speed_rows: list[list[object]] = []
    for burst in results["throughput"]:
        live = next((r for r in results["latency"] if r["renderer"] == burst["renderer"]), None)
        speed_rows.append(
            [
                f"{burst['renderer']} (ours, {machine['cpu_count']} CPUs, no GPU)",
                burst["fps"],
                latency(live) if live else "-",
                live["fps_min"] if live else "-",
                f"{live['cpu']['total_percent']}%" if live else "-",
            ]
        )
    for backend in ("PyTorch", "TensorRT"):
        speed_rows.append(
            [
                f"Ditto {backend} (seed, {seed['machine']})",
                seed["fps"][backend],
                f"{seed['frame_latency_ms'][backend]} (frame generation)",
                "-",
                "-",
            ]
        )
    webrtc_rows = [
        [w["renderer"], w.get("error", "-")] + ["-"] * 3
        if "error" in w
        else [
            w["renderer"],
            w["fps"],
            "- (no stamps)" if w["offset_ms"] is None else f"{w['offset_ms']:+.0f}",
            w["pictures"],
            w["audio_s"],
        ]
        for w in results["webrtc"]
    ]
    session_rows = [
        [s["sessions"], s["error"], *["-"] * 6]
        if "error" in s
        else [
            s["sessions"],
            ", ".join(str(p["fps"]) for p in s["per_session"]),
            latency(s),
            s["max_gap_ms"],
            f"{s['cpu']['service_percent']}% + {s['cpu']['workers_percent']}%",
            f"{s['cpu_percent_per_session']}%",
            "yes" if s["sustained"] else "no",
        ]
        for s in results["sessions"]
    ]
    parts = [
        "## Frame streaming (seed 004): `WS /api/v1/stream/ws` and WebRTC",
        "",
        f"Measured {results['started']} on {machine['cpu_count']} CPU cores, "
        f"{machine['memory_gb']} GiB, no GPU: `python -m control_api` as a real process on "
        "loopback, each session rendering in its own worker process, clients speaking the "
        f"seed's protocol. {size} at {fps:g} fps, the bundled portrait, "
        f"{results['audio']['seconds']:g} s of {results['audio']['source']} as 16 kHz int16 PCM. "
        "The seed's figures are Ditto's on an RTX 3090 GPU, as its README gives them: not the "
        "same renderer, machine or measure.",
        "",
        "*Throughput*: the whole audio sent at once, frames / (first chunk sent to last frame "
        "received). *Latency*: audio sent in real time (40 ms chunks every 40 ms); per frame, "
        "its arrival minus when the chunk ending its audio window was sent (look-ahead, render, "
        "JPEG, base64 and the socket included), p50 / p95 / max. *fps kept* and CPU (service + "
        "worker, 100% = one core) are from that real-time run.",
        "",
        _table(
            ["renderer", "throughput fps", "latency (ms)", "fps kept", "CPU"],
            speed_rows,
        ),
        "",
        "WebRTC (aiortc viewer over WHEP, audio in real time; offset: how much later pictures "
        "arrive than their audio, measured from the loudness testcard stamps into each picture, "
        "so only for testcard; meshwarp's frames and audio take the same path through the "
        "service):",
        "",
        _table(["renderer", "fps", "A/V offset (ms)", "pictures", "audio (s)"], webrtc_rows),
        "",
        f"Sessions per machine, meshwarp, each fed in real time (the seed: {seed['sessions']}):",
        "",
        _table(
            [
                "sessions",
                "fps kept per session",
                "latency (ms)",
                "longest gap (ms)",
                "CPU service + workers",
                "CPU per session",
                f"{fps:g} fps kept",
            ],
            session_rows,
        ),
        "",
    ]
    return "\n".join(parts)


def emit_json(results: dict, out: str) -> None:
    """A benchmark module's command-line result: printed, and written to `out` if given."""
    text = json.dumps(results, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)


def write_section(path: Path, name: str, markdown: str) -> None:
    """Replace (or append) the block between this section's markers in the report."""
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown}{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
