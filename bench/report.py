"""Render benchmark results as Markdown tables inside docs/benchmarks.md.

Each benchmark owns one block between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers,
so benchmarks added later replace only their own block.
"""

from __future__ import annotations

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
        "sent; an emotion goes into frames planned from then on, behind the ~100 ms of frames "
        "the pacer holds to keep audio smooth, and eases in (counted at a quarter of the way).",
    ]
    return "\n".join(parts) + "\n"


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
