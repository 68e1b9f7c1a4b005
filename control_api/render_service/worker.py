"""A render worker: `python -m control_api.render_service.worker [--cache N]`.

Its pool (pool.py) writes requests on its stdin and reads answers on its stdout, one frame
each (protocol.py); it renders one request at a time, never on the control API's event loop.

A request names a renderer, a size, emotions, an intensity, an image format and the portrait
(its bytes and their SHA-256). The worker keeps, least recently used out, up to `--cache`
renderers loaded with a portrait, by (renderer, width, height, portrait hash): a batch, or the
same portrait asked again, is analysed (`Renderer.load`) once. Each emotion is then
`Renderer.render_still`, encoded as PNG, JPEG or WebP (the RGB picture a viewer sees: the
alpha channel, a person mask or nothing, is dropped) and sent as base64.

A featureless picture (one colour, near-zero variance: seed 001's grey warm-up image) is the
warm-up probe. No renderer can find a face in it, so it is answered with the picture itself at
the requested size and format (`warmup: true`), once the renderer is loaded (at that size when
it was not loaded yet) and has drawn a still of the bundled portrait. Anything else goes to
the renderer, whose refusal (`no_face`, `multiple_faces`, ...) is the answer.

Errors are answers too: `{"ok": false, "code", "message", "status"}`. Only an unforeseen
exception is `render_failed` (500, its traceback on stderr); the worker goes on either way.
Anything printed by Python or native code goes to stderr: stdout carries frames only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import logging
import os
import sys
import tempfile
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import numpy as np

from renderers.errors import CodedError

from . import protocol

log = logging.getLogger("control_api.render_service")

FEATURELESS_STD = 2.0
"""A picture whose grey levels vary less than this (standard deviation, 0-255) is featureless:
the warm-up probe."""
FPS = 30.0
"""The frame rate renderers are made with; a still does not depend on it."""
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


class Refusal(CodedError):
    """An answer that is an error: a stable code, a message, the HTTP status it goes with."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int,
        retryable: bool = False,
        valid: list[str] | None = None,
    ) -> None:
        super().__init__(code, message, status=status, retryable=retryable)
        self.valid = valid

    def answer(self) -> dict[str, Any]:
        answer = {
            "ok": False,
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "retryable": self.retryable,
        }
        if self.valid is not None:
            answer["valid"] = self.valid
        return answer


def portrait_prefix(pid: int) -> str:
    """The name a worker's portrait files start with, in the temporary folder: its pool removes
    those of a worker that was killed while loading one."""
    return f"render-portrait-{pid}-"


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    """`rgb` (HxWx3 uint8) as a png, jpeg or webp file, with settings chosen for speed: a
    512x512 still takes about 12 ms as PNG (zlib level 1, run-length strategy: OpenCV's
    encoder, 4 ms faster than Pillow's and smaller), 9 ms as WebP (Pillow, method 2), 1 ms as
    JPEG (quality 90), on one core."""
    import cv2

    pixels = np.ascontiguousarray(rgb[..., :3])
    if fmt in ("png", "jpeg"):
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        if fmt == "png":
            params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, 3]  # Z_RLE
            ok, data = cv2.imencode(".png", bgr, params)
        else:
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise Refusal("render_failed", f"the picture could not be encoded as {fmt}", 500)
        return bytes(data.tobytes())
    if fmt == "webp":
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "WEBP", quality=85, method=2)
        return out.getvalue()
    raise Refusal("invalid_format", f"unknown format {fmt!r}", 422)


def featureless(rgb: np.ndarray) -> bool:
    """True for a picture of (nearly) one colour: the warm-up probe."""
    step = max(1, max(rgb.shape[:2]) // 256)  # a sample is enough to tell
    sample = rgb[::step, ::step].astype(np.float32)
    return float(sample.std(axis=(0, 1)).max()) < FEATURELESS_STD


class Studio:
    """The worker's renderers and its LRU of analysed portraits."""

    def __init__(self, cache_size: int) -> None:
        self.cache_size = cache_size
        self._loaded: OrderedDict[tuple[str, int, int, str], Any] = OrderedDict()
        self.analysed = 0

    def close(self) -> None:
        for drawer in self._loaded.values():
            _close(drawer)
        self._loaded.clear()

    # --- one request --------------------------------------------------------------------------

    def handle(self, request: dict[str, Any], image: bytes) -> tuple[dict[str, Any], bytes]:
        from renderers import Expression

        start = time.perf_counter()
        name = str(request["renderer"])
        width, height = int(request["width"]), int(request["height"])
        emotions = [str(e) for e in request["emotions"]]
        intensity = float(request["intensity"])
        fmt = str(request["format"])
        digest = str(request.get("hash") or hashlib.sha256(image).hexdigest())
        key = (name, width, height, digest)
        _check_emotions(name, emotions)

        decode_ms = analyse_ms = 0.0
        analysed = False
        probe: np.ndarray | None = None
        drawer = self._loaded.get(key)
        if drawer is not None:
            self._loaded.move_to_end(key)
        else:
            t = time.perf_counter()
            rgb = self._decode(image)
            decode_ms = _ms(t)
            t = time.perf_counter()
            if featureless(rgb):
                self._ensure_renderer(name, width, height)
                probe = _resize(rgb, width, height)
            else:
                drawer = self._load(key, image)
                analysed = True
            analyse_ms = _ms(t)

        results = []
        pictures = []
        for index, emotion in enumerate(emotions):
            t = time.perf_counter()
            if probe is not None:
                rgb = probe
            else:
                assert drawer is not None
                rgb = drawer.render_still(Expression(emotion, intensity))
            render_ms = _ms(t)
            t = time.perf_counter()
            picture = base64.b64encode(encode(rgb, fmt))
            encode_ms = _ms(t)
            first = index == 0
            results.append(
                {
                    "emotion": emotion,
                    "length": len(picture),
                    "analysed": analysed and first,
                    "warmup": probe is not None,
                    "timings": {
                        "decodeMs": decode_ms if first else 0.0,
                        "analyseMs": analyse_ms if first else 0.0,
                        "renderMs": render_ms,
                        "encodeMs": encode_ms,
                    },
                }
            )
            pictures.append(picture)
        shown = drawer if drawer is not None else self._any(name)
        answer = {
            "ok": True,
            "backend": getattr(shown, "backend_description", "") or None,
            "results": results,
            "analysed": analysed,
            "warmup": probe is not None,
            "workerMs": _ms(start),
        }
        return answer, b"".join(pictures)

    # --- portraits ----------------------------------------------------------------------------

    def _decode(self, image: bytes) -> np.ndarray:
        from renderers import RendererError
        from renderers.vision.portrait import load_image

        try:
            return load_image(image)
        except RendererError as error:
            if error.code == "image_too_large":
                raise Refusal("image_too_large", error.message, 413) from None
            raise Refusal("invalid_image", error.message, 422) from None

    def _load(self, key: tuple[str, int, int, str], image: bytes) -> Any:
        """A renderer loaded with this portrait (analysed now), kept in the LRU."""
        from renderers.vision.portrait import sniff_format

        name, width, height, digest = key
        # Renderers load a file: the portrait goes to one for as long as the load takes.
        suffix = _SUFFIXES.get(sniff_format(image[:16]) or "", "")
        handle, name_on_disk = tempfile.mkstemp(prefix=portrait_prefix(os.getpid()), suffix=suffix)
        path = Path(name_on_disk)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(image)
            drawer = self._create(name, width, height, path)
        finally:
            path.unlink(missing_ok=True)
        self._keep(key, drawer)
        self.analysed += 1
        return drawer

    def _any(self, name: str) -> Any:
        """A loaded renderer `name` (the warm-up's), or None."""
        return next((d for k, d in self._loaded.items() if k[0] == name), None)

    def _ensure_renderer(self, name: str, width: int, height: int) -> None:
        """Make sure renderer `name` is loaded (at any size; at this one when it is not loaded
        at all) and has drawn: the warm-up. Not one per size: a probe at every size would have
        the bundled portrait prepared (and a renderer's disk cache filled) for each."""
        if any(k[0] == name for k in self._loaded):
            return
        from renderers import Expression, RendererError
        from renderers.bundled import DEFAULT_PORTRAIT

        digest = hashlib.sha256(DEFAULT_PORTRAIT.read_bytes()).hexdigest()
        try:
            drawer = self._create(name, width, height, DEFAULT_PORTRAIT)
            drawer.render_still(Expression("neutral", 0.0))
        except Refusal:
            raise
        except RendererError as error:
            raise Refusal(
                "renderer_unavailable",
                f"renderer '{name}' could not warm up on the bundled portrait: {error.message}",
                503,
            ) from None
        self._keep((name, width, height, digest), drawer)
        self.analysed += 1

    def _create(self, name: str, width: int, height: int, source: Path) -> Any:
        import renderers

        reason = renderers.unavailable_reason(name)
        if reason is not None:
            raise Refusal("renderer_unavailable", f"renderer '{name}': {reason}", 503)
        drawer = renderers.create(name, renderers.VideoFormat(width, height, FPS))
        try:
            drawer.load(source)
        except renderers.RendererError as error:
            _close(drawer)
            raise Refusal(error.code, error.message, 422) from None
        except BaseException:
            _close(drawer)
            raise
        return drawer

    def _keep(self, key: tuple[str, int, int, str], drawer: Any) -> None:
        self._loaded[key] = drawer
        self._loaded.move_to_end(key)
        while len(self._loaded) > self.cache_size:
            _, old = self._loaded.popitem(last=False)
            _close(old)


def _check_emotions(name: str, emotions: list[str]) -> None:
    """Refuse an emotion the renderer cannot show: its capabilities list them; one without
    emotion control shows only neutral (its stills carry no expression)."""
    import renderers

    try:
        shown = renderers.renderer_class(name).capabilities.emotions
    except (renderers.RendererError, ImportError):
        return  # loading it says why it cannot be used
    supported = list(shown) or ["neutral"]
    for emotion in emotions:
        if emotion not in supported:
            raise Refusal(
                "emotion_not_supported",
                f"renderer '{name}' cannot show '{emotion}'; it shows: {', '.join(supported)}",
                422,
                valid=supported,
            )


def _close(drawer: Any) -> None:
    try:
        drawer.close()
    except Exception:
        log.exception("closing a renderer failed")


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def claim_stdout() -> IO[bytes]:
    """Keep the real stdout for frames and point fd 1 at stderr for everything else."""
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return frames


def _limit_blas() -> None:
    """One BLAS thread, as the live avatar and the offline renders use (AVATAR_BLAS_THREADS):
    renderers call BLAS for small products, and idle OpenBLAS threads spin."""
    try:
        threads = int(os.environ.get("AVATAR_BLAS_THREADS", "1").strip() or "1")
    except ValueError:
        threads = 1
    if threads > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")


def serve(requests: IO[bytes], answers: IO[bytes], cache_size: int) -> None:
    studio = Studio(cache_size)
    answers.write(protocol.pack({"ok": True, "hello": True, "pid": os.getpid()}))
    answers.flush()
    try:
        while True:
            frame = protocol.read_sync(requests)
            if frame is None:
                return  # the pool closed our stdin: stop
            request, image = frame
            try:
                answer, payload = studio.handle(request, image)
            except Refusal as refusal:
                answer, payload = refusal.answer(), b""
            except Exception:
                traceback.print_exc()
                failed = Refusal("render_failed", "the renderer failed on this request", 500)
                answer, payload = failed.answer(), b""
            answer["id"] = request.get("id")
            answer["analysedTotal"] = studio.analysed
            answers.write(protocol.pack(answer, payload))
            answers.flush()
    finally:
        studio.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control_api.render_service.worker")
    parser.add_argument("--cache", type=int, default=8, help="analysed portraits kept")
    args = parser.parse_args(argv)
    answers = claim_stdout()
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    _limit_blas()
    import renderers  # noqa: F401 - imported before the hello, so the first request is not slower

    try:
        serve(sys.stdin.buffer, answers, max(1, args.cache))
    except protocol.ProtocolError as error:
        log.error("render worker: %s; stopping", error)
        return 2
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
