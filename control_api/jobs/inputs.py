"""Checking a job's input, the same way for the HTTP routes and for the RunPod worker.

Each function returns the input normalised (defaults filled in, absent optionals dropped) or
raises InputError with a message for the caller.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from renderers.errors import CodedError
from renderers.preparation import AVATAR_ID_PATTERN as PACKAGE_ID_PATTERN

from . import storage

PREPARE_FIELDS = ("video_url", "avatar_id", "model", "s3_bucket", "s3_prefix")
RENDER_FIELDS = (
    "image_url",
    "avatar_id",
    "audio_url",
    "renderer",
    "emotion",
    "intensity",
    "prompt",
    "webhook_url",
)
DEFAULT_MODEL = "wav2lip"
DEFAULT_RENDERER = "meshwarp"
MAX_URL_CHARS = 8192
MAX_DATA_URI_CHARS = 16 * 1024 * 1024
MAX_PROMPT_CHARS = 2000
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class InputError(CodedError, ValueError):
    """A job input that cannot be accepted; `message` is for the caller. The routes answer it
    with their own status (400 on the RunPod routes, 422 `invalid_field` on the render API)."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(code, message, retryable=False)


def _object(raw: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InputError("'input' must be a JSON object")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise InputError(
            f"unknown input field(s): {', '.join(unknown)[:200]}; allowed: {', '.join(allowed)}"
        )
    # JSON null means "not given", as RunPod clients often send every key.
    return {key: value for key, value in raw.items() if value is not None}


def _string(values: Mapping[str, Any], name: str, *, max_chars: int, required: bool) -> str | None:
    value = values.get(name)
    if value is None:
        if required:
            raise InputError(f"'{name}' is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"'{name}' must be a non-empty string")
    if len(value) > max_chars:
        raise InputError(f"'{name}' is {len(value)} characters; the most is {max_chars}")
    return value.strip()


def _url(values: Mapping[str, Any], name: str, *, required: bool, data: bool = False) -> str | None:
    limit = MAX_DATA_URI_CHARS if data else MAX_URL_CHARS
    value = _string(values, name, max_chars=limit, required=required)
    if value is None:
        return None
    schemes = ("http://", "https://", "data:") if data else ("http://", "https://")
    if not value.lower().startswith(schemes):
        allowed = "http(s) or data: URL" if data else "http(s) URL"
        raise InputError(f"'{name}' must be an {allowed}")
    if not data and len(value) > MAX_URL_CHARS:
        raise InputError(f"'{name}' is longer than {MAX_URL_CHARS} characters")
    return value


def prepare_input(raw: Any) -> dict[str, Any]:
    """Seed 000's input: {video_url, avatar_id, model?, s3_bucket?, s3_prefix?}."""
    values = _object(raw, PREPARE_FIELDS)
    video_url = _url(values, "video_url", required=True)
    avatar_id = _string(values, "avatar_id", max_chars=128, required=True)
    model = _string(values, "model", max_chars=64, required=False) or DEFAULT_MODEL
    bucket = _string(values, "s3_bucket", max_chars=63, required=False)
    prefix = values.get("s3_prefix")
    if prefix is not None and (not isinstance(prefix, str) or len(prefix) > 512):
        raise InputError("'s3_prefix' must be a string of at most 512 characters")
    if bucket is not None and not S3_BUCKET.fullmatch(bucket):
        raise InputError(f"'s3_bucket' {bucket[:80]!r} is not a valid S3 bucket name")
    assert avatar_id is not None
    if not PACKAGE_ID_PATTERN.fullmatch(avatar_id):
        raise InputError(
            "'avatar_id' must be 1-128 characters of A-Z a-z 0-9 _ . -, not starting with '.'"
        )
    result: dict[str, Any] = {"video_url": video_url, "avatar_id": avatar_id, "model": model}
    if bucket is not None:
        result["s3_bucket"] = bucket
        result["s3_prefix"] = (prefix or "").strip("/")
    elif prefix:
        raise InputError("'s3_prefix' needs 's3_bucket'")
    return result


def prepare_destination(
    job: Mapping[str, Any], *, default_bucket: str | None, local_store: bool
) -> str | None:
    """Where the package of a checked prepare input (`prepare_input`) goes: an S3 bucket, or
    None for the local avatar store. InputError when it can go to neither, so a job that
    could only fail at its end is refused before it starts (at submit time on the API).
    An id bound for the local store may be in any case; it is installed in lower case
    (storage.local_avatar_id)."""
    bucket = job.get("s3_bucket") or default_bucket
    if bucket is None:
        if not local_store:
            raise InputError("'s3_bucket' is required (or set AVATAR_S3_BUCKET on the worker)")
        check_local_avatar_id(job["avatar_id"])
    return bucket


def check_local_avatar_id(avatar_id: str) -> str:
    """An avatar kept in the local store must be one the avatar catalog lists (in any case);
    the id it is installed under."""
    try:
        return storage.local_avatar_id(avatar_id)
    except storage.StorageError as error:
        raise InputError(
            f"'avatar_id' cannot go in the local avatar store: {error.message} "
            "(or give 's3_bucket')",
            error.code,
        ) from None


def render_input(raw: Any) -> dict[str, Any]:
    """Seed 003's input: {image_url | avatar_id, audio_url, renderer?, emotion?, intensity?,
    prompt?, webhook_url?}. Whether renderer, emotion and avatar_id name real things is for
    the caller to check (it knows the catalog)."""
    values = _object(raw, RENDER_FIELDS)
    image_url = _url(values, "image_url", required=False, data=True)
    avatar_id = _string(values, "avatar_id", max_chars=64, required=False)
    if (image_url is None) == (avatar_id is None):
        raise InputError("give either 'image_url' or 'avatar_id'")
    audio_url = _url(values, "audio_url", required=True, data=True)
    renderer = _string(values, "renderer", max_chars=64, required=False) or DEFAULT_RENDERER
    emotion = _string(values, "emotion", max_chars=64, required=False) or "neutral"
    intensity = values.get("intensity", 0.7)
    if isinstance(intensity, bool) or not isinstance(intensity, int | float):
        raise InputError("'intensity' must be a number between 0 and 1")
    if not (math.isfinite(intensity) and 0.0 <= intensity <= 1.0):
        raise InputError(f"'intensity' must be between 0 and 1, not {intensity:g}")
    prompt = values.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
        raise InputError(f"'prompt' must be a string of at most {MAX_PROMPT_CHARS} characters")
    webhook_url = _url(values, "webhook_url", required=False)
    result: dict[str, Any] = {
        "audio_url": audio_url,
        "renderer": renderer,
        "emotion": emotion,
        "intensity": float(intensity),
    }
    if image_url is not None:
        result["image_url"] = image_url
    if avatar_id is not None:
        result["avatar_id"] = avatar_id
    if prompt:
        result["prompt"] = prompt
    if webhook_url is not None:
        result["webhook_url"] = webhook_url
    return result
