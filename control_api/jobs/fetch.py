"""Download a caller's URL (a training video, a portrait, an audio track) to a file, safely.

`fetch_to_file` accepts `http(s)://` URLs, checked hop by hop by outbound.py's address rules
(redirects are followed by hand, each new host resolved and checked again), `data:` URIs
(base64 or percent-encoded, as the render API's callers may send small files inline) and,
through the `local_files` hook, URLs of files this service already holds. The file appears at
`dest` complete or not at all: bytes go to a temporary file beside it that is renamed at the
end and removed on any failure. Failures are FetchError with a stable code:

| code | when |
| --- | --- |
| `url_invalid` | not a URL, no host, a bad port, a malformed `data:` URI |
| `url_scheme_not_allowed` | anything but http, https and data (also on a redirect) |
| `url_credentials_not_allowed` | `user:password@` in the URL |
| `url_host_unresolved` | DNS has no answer for the host |
| `url_host_not_allowed` | the host is (or resolves to) a non-public address the policy refuses |
| `download_too_large` | more than `max_bytes` (declared or actually sent) |
| `download_timeout` | the whole download took longer than `timeout_s`, or connecting did |
| `download_failed` | HTTP errors (`upstream_status`), a refused connection, TLS, a cut-off body |
| `too_many_redirects` | more than `max_redirects` hops |
"""

from __future__ import annotations

import base64
import binascii
import http.client
import mimetypes
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, unquote_to_bytes, urljoin

from .outbound import (
    USER_AGENT_DOWNLOADS,
    Deadline,
    Exchange,
    FetchError,
    FetchPolicy,
    Target,
    describe_failure,
    open_request,
    parse_target,
)

__all__ = ["FetchError", "FetchPolicy", "FetchedFile", "fetch_to_file"]

CHUNK_BYTES = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
LocalFiles = Callable[[str], Path | None]


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    bytes: int
    content_type: str | None
    """The media type without parameters ("video/mp4"), as the server or data: URI said."""
    final_url: str
    """The URL after redirects; for a data: URI just "data:<media type>"."""


def fetch_to_file(
    url: str, dest: Path, policy: FetchPolicy, *, local_files: LocalFiles | None = None
) -> FetchedFile:
    """Download `url` to `dest` (replacing it), or raise FetchError and leave nothing behind.

    `local_files(url)` is asked first, with the URL as given: a Path means "this URL is one of
    our own files, copy it from here" (still size-limited), None means fetch it normally.
    """
    dest = Path(dest)
    if local_files is not None:
        local = local_files(url)
        if local is not None:
            return _copy_local(Path(local), dest, policy, url)
    if isinstance(url, str) and url[:5].lower() == "data:":
        return _save_data_uri(url, dest, policy)
    return _download(url, dest, policy)


def _download(url: str, dest: Path, policy: FetchPolicy) -> FetchedFile:
    deadline = Deadline(policy.timeout_s)
    headers = {"User-Agent": USER_AGENT_DOWNLOADS, "Accept": "*/*", "Accept-Encoding": "identity"}
    current = url
    for _hop in range(policy.max_redirects + 1):
        target = parse_target(current)
        try:
            with open_request(target, policy, deadline, headers=headers) as exchange:
                if exchange.status in REDIRECT_STATUSES:
                    current = _redirect_location(exchange, current, target)
                    continue
                if not 200 <= exchange.status < 300:
                    raise FetchError(
                        "download_failed",
                        f"download failed: {target.origin} answered HTTP {exchange.status} "
                        f"{exchange.response.reason}".rstrip(),
                        upstream_status=exchange.status,
                    )
                declared = _declared_length(exchange, policy)
                size = _save(_body_chunks(exchange, declared, target), dest, policy)
                media = _media_type(exchange.header("Content-Type"))
                return FetchedFile(dest, size, media, current)
        except TimeoutError:
            raise FetchError(
                "download_timeout",
                f"download from {target.origin} timed out after {policy.timeout_s:g} s",
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise FetchError("download_failed", describe_failure(error, target)) from None
    raise FetchError("too_many_redirects", f"URL redirected more than {policy.max_redirects} times")


def _redirect_location(exchange: Exchange, current: str, target: Target) -> str:
    location = (exchange.header("Location") or "").strip()
    if not location:
        raise FetchError(
            "download_failed",
            f"{target.origin} answered HTTP {exchange.status} without a Location",
            upstream_status=exchange.status,
        )
    return urljoin(current, location)  # checked like the first URL by the next hop


def _declared_length(exchange: Exchange, policy: FetchPolicy) -> int | None:
    raw = (exchange.header("Content-Length") or "").strip()
    if not (raw.isascii() and raw.isdigit()):
        return None
    declared = int(raw)
    if declared > policy.max_bytes:
        raise _too_large(policy.max_bytes, declared)
    return declared


def _body_chunks(exchange: Exchange, declared: int | None, target: Target) -> Iterator[bytes]:
    received = 0
    while True:
        chunk = exchange.read_chunk(CHUNK_BYTES)
        if not chunk:
            break
        received += len(chunk)
        yield chunk
    # http.client ends a Content-Length body quietly when the peer hangs up early.
    if declared is not None and received < declared:
        raise FetchError(
            "download_failed",
            f"download from {target.origin} was cut off after {received} of {declared} bytes",
        )


def _save_data_uri(url: str, dest: Path, policy: FetchPolicy) -> FetchedFile:
    media_type, data = decode_data_uri(url, policy.max_bytes)
    size = _save([data], dest, policy)
    media = media_type or "text/plain"
    return FetchedFile(dest, size, media, f"data:{media}")


def decode_data_uri(url: str, max_bytes: int) -> tuple[str, bytes]:
    """(the media type as declared, lower case, "" when none; the bytes) of a `data:` URI, or
    FetchError `url_invalid` / `download_too_large` (over `max_bytes`)."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise FetchError("url_invalid", "data: URI has no ',' before its data")
    media_type, *params = header.split(";")
    if any(p.strip().lower() == "base64" for p in params):
        text = "".join(unquote(payload).split())
        if len(text) // 4 * 3 > max_bytes + 3:  # refuse before decoding it all
            raise _too_large(max_bytes, len(text) // 4 * 3)
        text = text.translate(str.maketrans("-_", "+/"))  # accept the URL-safe alphabet too
        try:
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise FetchError("url_invalid", "data: URI is not valid base64") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(max_bytes, len(data))
    return _media_type(media_type) or "", data


def _copy_local(source: Path, dest: Path, policy: FetchPolicy, url: str) -> FetchedFile:
    try:
        src = source.open("rb")
    except OSError:
        raise FetchError("download_failed", "the uploaded file this URL names is gone") from None
    with src:
        size = _save(iter(lambda: src.read(CHUNK_BYTES), b""), dest, policy)
    return FetchedFile(dest, size, mimetypes.guess_type(source.name)[0], url)


def _save(chunks: Iterable[bytes], dest: Path, policy: FetchPolicy) -> int:
    """Write `chunks` to `dest` through a temporary file, stopping past `max_bytes`."""
    total = 0
    with _atomic_file(dest) as out:
        for chunk in chunks:
            total += len(chunk)
            if total > policy.max_bytes:
                raise _too_large(policy.max_bytes, None)
            try:
                out.write(chunk)
            except OSError as error:  # disk full: not the remote side's fault, say so
                raise FetchError(
                    "download_failed", f"could not write the download: {error.strerror}"
                ) from None
    return total


@contextmanager
def _atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """A new file that becomes `dest` only when the block finishes without an exception."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(tmp, dest)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def _too_large(max_bytes: int, size: int | None) -> FetchError:
    limit = _human_bytes(max_bytes)
    shown = f" ({_human_bytes(size)})" if size is not None else ""
    return FetchError("download_too_large", f"download is larger than {limit}{shown}")


def _media_type(value: str | None) -> str | None:
    media = (value or "").split(";", 1)[0].strip().lower()
    return media or None


def _human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"
