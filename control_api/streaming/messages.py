"""What a streaming client sends (seed 004's WebSocket protocol), read and checked.

Every message is a JSON object in a text frame with a `type`: `init`, `audio_chunk`, `stop`,
and our `webrtc_offer`. Each reader here returns the checked values or raises `StreamError`,
whose code and message the client gets as `{"type": "error", "code", "message"}`; `fatal`
errors close the socket after that message, the others leave the session as it was.
Cheap checks only, on the event loop: the source's bytes are decoded here and sniffed by their
first bytes; the worker process decodes the picture itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode

from renderers.errors import CodedError
from renderers.vision.portrait import sniff_format

from ..config import Settings
from ..jobs.fetch import FetchError, decode_data_uri
from .emo import Emo, EmoError, parse_emo
from .frames import AUDIO_RATE

MIN_SIZE = 64
MAX_SIZE = 2048
DEFAULT_SIZE = 512
DEFAULT_MAX_SIZE = 1920
"""Ditto's default `max_size`."""
MIN_FPS = 1.0
MAX_FPS = 60.0
CROP_SCALE_RANGE = (0.5, 10.0)
DEFAULT_CROP_SCALE = 2.3
"""Ditto's default `crop_scale`."""
MAX_SAMPLING_TIMESTEPS = 1000
CONFIG_FIELDS = (
    "max_size",
    "crop_scale",
    "emo",
    "sampling_timesteps",
    "renderer",
    "width",
    "height",
    "fps",
)
SAMPLE_BYTES = 2
"""PCM int16: two bytes a sample."""
IMAGE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
SOURCE_KINDS = "a PNG, JPEG or WebP image, or an MP4, MOV, WebM, MKV or AVI video"


class StreamError(CodedError):
    """An `error` message for the client: a stable `code` and a `message` for people.
    `fatal`: the socket is closed after it, with `close_code`."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        fatal: bool = False,
        close_code: int = WSCloseCode.OK,
    ) -> None:
        super().__init__(code, message)
        self.fatal = fatal
        self.close_code = int(close_code)

    def message_json(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


@dataclass(frozen=True)
class InitRequest:
    source: bytes = field(repr=False)
    kind: str
    """`image` or `video`."""
    suffix: str
    """The file name suffix the worker gives the source (`.jpg`, `.mp4`, ...)."""
    renderer: str
    width: int
    height: int
    fps: float
    max_size: int
    crop_scale: float
    sampling_timesteps: int | None
    """None: not given; a diffusion renderer keeps its own setting (AVATAR_DITTO_STEPS)."""
    emo: Emo
    ignored: tuple[str, ...] = ()
    """Config fields this service does not know (Ditto has more): accepted, unused."""


# --- any message ------------------------------------------------------------------------------


def parse_message(text: str) -> dict[str, Any]:
    """A text frame as a JSON object with a string `type`."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays nested a thousand deep
        raise StreamError(
            "invalid_json", "a message must be a JSON object; this is not JSON"
        ) from None
    if not isinstance(message, dict):
        raise StreamError("invalid_message", "a message must be a JSON object with a 'type'")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise StreamError(
            "invalid_message",
            "a message needs a 'type': init, audio_chunk, stop or webrtc_offer",
        )
    return message


def unknown_type(kind: str) -> StreamError:
    return StreamError(
        "unknown_message_type",
        f"unknown message type {kind[:64]!r}; send init, audio_chunk, stop or webrtc_offer",
    )


# --- init -------------------------------------------------------------------------------------


def parse_init(message: dict[str, Any], settings: Settings) -> InitRequest:
    config = message.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise _config_error("'config' must be a JSON object")
    renderer = _renderer(config.get("renderer"), settings.stream_allowed)
    max_size = _integer(config, "max_size", DEFAULT_MAX_SIZE, MIN_SIZE, 8192)
    width = _size(config, "width")
    height = _size(config, "height")
    width, height = _fit(width or height or DEFAULT_SIZE, height or width or DEFAULT_SIZE, max_size)
    fps = _number(config, "fps", settings.stream_fps, MIN_FPS, MAX_FPS)
    crop_scale = _number(config, "crop_scale", DEFAULT_CROP_SCALE, *CROP_SCALE_RANGE)
    steps = None
    if config.get("sampling_timesteps") is not None:  # else the renderer's own setting
        steps = _integer(config, "sampling_timesteps", 0, 1, MAX_SAMPLING_TIMESTEPS)
    try:
        emo = parse_emo(config.get("emo"))
    except EmoError as error:
        raise _config_error(str(error)) from None
    data, kind, suffix = decode_source(message.get("source"), settings.max_upload_bytes)
    return InitRequest(
        source=data,
        kind=kind,
        suffix=suffix,
        renderer=renderer,
        width=width,
        height=height,
        fps=fps,
        max_size=max_size,
        crop_scale=crop_scale,
        sampling_timesteps=steps,
        emo=emo,
        ignored=tuple(sorted(str(k)[:64] for k in config if k not in CONFIG_FIELDS))[:32],
    )


def decode_source(value: Any, max_bytes: int) -> tuple[bytes, str, str]:
    """The init's `source` (base64, or a data: URI): (bytes, kind, file suffix)."""
    if not isinstance(value, str) or not value.strip():
        raise StreamError(
            "invalid_source", f"'source' must be {SOURCE_KINDS}, as base64 (or a data: URI)"
        )
    text = value.strip()
    uri = text if text[:5].lower() == "data:" else "data:;base64," + text
    try:
        _, data = decode_data_uri(uri, max_bytes)
    except FetchError as error:
        if error.code == "download_too_large":
            raise StreamError(
                "source_too_large",
                f"the source is larger than {max_bytes} bytes (AVATAR_MAX_UPLOAD_BYTES)",
            ) from None
        raise StreamError("invalid_base64", "'source' is not valid base64") from None
    kind_suffix = sniff_source(data[:64])
    if kind_suffix is None:
        raise StreamError("unsupported_source", f"the source must be {SOURCE_KINDS}")
    return data, *kind_suffix


def sniff_source(head: bytes) -> tuple[str, str] | None:
    """('image' | 'video', file suffix) from a file's first bytes, or None."""
    image = sniff_format(head[:16])
    if image is not None:
        return "image", IMAGE_SUFFIXES[image]
    if head[4:8] == b"ftyp":
        return "video", ".mov" if head[8:12] == b"qt  " else ".mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # QuickTime without ftyp
        return "video", ".mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska or WebM
        return "video", ".webm" if b"webm" in head else ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", ".avi"
    return None


def _renderer(value: Any, allowed: tuple[str, ...]) -> str:
    if value is None:
        return allowed[0]
    if isinstance(value, str) and value in allowed:
        return value
    import renderers

    known = isinstance(value, str) and value in renderers.available()
    raise StreamError(
        "renderer_not_allowed" if known else "invalid_renderer",
        (
            f"renderer {value!r:.64} is not offered for streaming (AVATAR_STREAM_RENDERERS)"
            if known
            else f"unknown renderer {value!r:.64}"
        )
        + f"; valid: {', '.join(allowed)}",
    )


def _fit(width: int, height: int, max_size: int) -> tuple[int, int]:
    """`width` x `height` scaled down (aspect kept, even sides) so that neither passes
    `max_size`."""
    longest = max(width, height)
    if longest <= max_size:
        return width, height
    scale = max_size / longest
    return (
        max(MIN_SIZE, int(width * scale) // 2 * 2),
        max(MIN_SIZE, int(height * scale) // 2 * 2),
    )


def _size(config: dict[str, Any], name: str) -> int | None:
    if config.get(name) is None:
        return None
    value = _integer(config, name, 0, MIN_SIZE, MAX_SIZE)
    if value % 2:
        raise _config_error(f"'{name}' must be an even number of pixels, not {value}")
    return value


def _integer(config: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = config.get(name)
    if value is None:
        return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _config_error(
            f"'{name}' must be a whole number from {low} to {high}, not {value!r:.32}"
        )
    return value


def _number(config: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = config.get(name)
    if value is None:
        return float(default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise _config_error(
            f"'{name}' must be a number from {low:g} to {high:g}, not {value!r:.32}"
        )
    return float(value)


def _config_error(message: str) -> StreamError:
    return StreamError("invalid_config", message)


# --- audio_chunk ------------------------------------------------------------------------------


def chunk_limit_bytes(settings: Settings) -> int:
    return int(settings.stream_max_chunk_s * AUDIO_RATE) * SAMPLE_BYTES


def parse_audio(message: dict[str, Any], settings: Settings) -> bytes:
    """The PCM of an `audio_chunk`: int16 mono at 16 kHz, little-endian."""
    timestamp = message.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or not math.isfinite(timestamp)
    ):
        raise StreamError("invalid_message", "'timestamp' must be a number (seconds)")
    text = message.get("data")
    if not isinstance(text, str):
        raise StreamError(
            "invalid_audio",
            "'data' must be base64 of PCM audio: 16 kHz, 16-bit signed little-endian, mono",
        )
    limit = chunk_limit_bytes(settings)
    text = "".join(text.split())
    if len(text) // 4 * 3 > limit + 3:  # refused before it is decoded
        raise _chunk_too_large(settings)
    try:
        pcm = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise StreamError("invalid_base64", "'data' is not valid base64") from None
    if len(pcm) > limit:
        raise _chunk_too_large(settings)
    if not pcm:
        raise StreamError("invalid_audio", "'data' holds no audio")
    if len(pcm) % SAMPLE_BYTES:
        raise StreamError(
            "invalid_audio",
            f"'data' has {len(pcm)} bytes: 16-bit PCM has 2 bytes a sample, so an even number",
        )
    return pcm


def _chunk_too_large(settings: Settings) -> StreamError:
    return StreamError(
        "audio_chunk_too_large",
        f"an audio_chunk carries at most {settings.stream_max_chunk_s:g} s of audio "
        f"({chunk_limit_bytes(settings)} bytes of 16 kHz int16; AVATAR_STREAM_MAX_CHUNK_S): "
        "send it in smaller chunks",
    )


# --- webrtc_offer -----------------------------------------------------------------------------

MAX_SDP_CHARS = 64 * 1024


def parse_offer(message: dict[str, Any]) -> str:
    sdp = message.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip() or len(sdp) > MAX_SDP_CHARS:
        raise StreamError(
            "invalid_message",
            "a webrtc_offer needs 'sdp': the offer's SDP text "
            f"(at most {MAX_SDP_CHARS} characters)",
        )
    return sdp


__all__ = [
    "InitRequest",
    "StreamError",
    "decode_source",
    "parse_audio",
    "parse_init",
    "parse_message",
    "parse_offer",
    "sniff_source",
    "unknown_type",
]
