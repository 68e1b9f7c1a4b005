"""Receiving one uploaded file from a `multipart/form-data` body, the same way on every route
that takes one (`POST /api/v1/files` and its seed alias, `POST /backgrounds`).

`receive(request, rules, directory)` reads the parts, streams the file part to a hidden
temporary file in `directory` (beside where the caller will put it, so a rename finishes the
job) under a size limit, checks its first bytes when the caller says how, and yields an
`Upload`. Whatever goes wrong, a malformed body, a client that stops half-way or the caller's
own refusal, the temporary file is removed (and `directory` too when this call made it and
nothing else is in it), and the client gets one of these, in the error shape of errors.py:

* 400 `invalid_multipart`: no boundary, no opening or closing boundary, a malformed or too
  long part header, a part without Content-Disposition, a body that ends early, a part sent
  with a transfer encoding;
* 408 `request_timeout`: no bytes of the body arrived for `Rules.idle_timeout_s` (a client
  that stalls, or dribbles its body slower than that);
* 413 `payload_too_large`: the file (or the declared body) is over the limit, which it names;
* 415 `unsupported_media_type`: the body is not `multipart/form-data`;
* 422 `invalid_field`: no file, an unknown field, a field sent twice, two files, an empty
  file, a text field too long or not UTF-8, a nested multipart part;
* 422 with the caller's code (`invalid_image`): a file whose first bytes are not of a kind
  the caller takes, or sent with a Content-Type of another kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import ApiError, body_timeout

CHUNK_BYTES = 256 * 1024
HEAD_BYTES = 16
"""How much of the file's start `Rules.sniff` is shown (once the whole file is in, so that
one over the limit is a 413 whatever it holds)."""
MAX_PART_HEADERS = 16
MAX_HEADER_LINE = 8190
_BODY_SLACK = 64 * 1024
"""What a body may hold beside the file (boundaries, part headers, small fields) before a
declared Content-Length alone shows it is over the limit."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
# A part's content as sent: RFC 7578 (4.7) deprecates Content-Transfer-Encoding and nothing
# decodes a Content-Encoding here, so such a part would be stored still encoded.
_PLAIN_ENCODINGS = frozenset({"", "binary", "8bit", "7bit", "identity"})
# What a client that has gone, or a body cut short, raises while it is read.
_READ_ERRORS = (ValueError, AssertionError, RuntimeError, HttpProcessingError, ConnectionError)


@dataclass(frozen=True)
class Rules:
    """What a route accepts."""

    max_bytes: int
    limit_name: str
    """The setting behind `max_bytes`, named in a 413 (`AVATAR_MAX_UPLOAD_BYTES`)."""
    usage: str
    """What to send, said in every refusal: "send multipart/form-data with ..."."""
    file_field: str = "file"
    text_fields: Mapping[str, int] = field(default_factory=dict)
    """Small text fields allowed beside the file, with their most bytes each."""
    sniff: Callable[[bytes], object] | None = None
    """The file's kind from its first HEAD_BYTES bytes, falsy when it is none the route takes."""
    sniff_error: tuple[str, str] = ("invalid_file", "the file is not of a kind this route takes")
    """(code, message) of the 422 for a file `sniff` refuses."""
    declared_types: tuple[str, ...] = ()
    """Prefixes of the part Content-Types accepted (`image/`); empty: any. A part without one,
    or sent as application/octet-stream, is judged by its bytes alone."""
    idle_timeout_s: float = 30.0
    """The longest wait for the body's next bytes (Settings.body_idle_timeout_s): a client
    that stalls gets a 408 and its partial file is removed, instead of holding both forever."""


@dataclass
class Upload:
    path: Path
    """The file as received: a temporary file in the directory given, removed after the
    `async with` unless the caller has moved it (os.replace) to where it belongs."""
    size: int
    filename: str | None
    """The name the client gave, as sent: see safe_filename()."""
    content_type: str | None
    fields: dict[str, str]
    """The text fields, decoded and stripped."""


def safe_filename(filename: str | None, default: str = "file") -> str:
    """A file name of safe characters (A-Z a-z 0-9 . _ -) that keeps the original's suffix:
    no directories, no traversal, no leading dot."""
    base = (filename or "").replace("\\", "/").rpartition("/")[2]
    name = _UNSAFE.sub("_", base).lstrip(".")[-100:]
    return name if _SAFE_NAME.fullmatch(name) else default


def too_large(rules: Rules) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"the upload is larger than {rules.max_bytes} bytes ({rules.limit_name})",
        headers={hdrs.CONNECTION: "close"},
    )


def _malformed(rules: Rules, what: str) -> ApiError:
    return ApiError(400, "invalid_multipart", f"{what}; {rules.usage}")


def _invalid(rules: Rules, what: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{what}; {rules.usage}")


@contextlib.asynccontextmanager
async def receive(request: web.Request, rules: Rules, directory: Path) -> AsyncIterator[Upload]:
    """The upload of `request`, its file in `directory` (made if missing), or ApiError."""
    reader = _reader(request, rules)
    # Not in a thread: a cancellation while awaiting one would leave its file behind.
    created, handle, path = _temporary_file(directory)
    try:
        with os.fdopen(handle, "wb") as out:
            upload = await _read(reader, rules, path, out)
        yield upload
    finally:
        # Synchronous on purpose: this also runs when the request's task is cancelled.
        path.unlink(missing_ok=True)
        _remove_dir(directory, created)


def _temporary_file(directory: Path) -> tuple[bool, int, Path]:
    """(whether `directory` was made here, the open file's descriptor, its path)."""
    created = not directory.is_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=directory)
    except OSError:
        _remove_dir(directory, created)
        raise
    return created, handle, Path(name)


def _remove_dir(directory: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):  # only when empty: the caller's file may be in it
            directory.rmdir()


def _reader(request: web.Request, rules: Rules) -> MultipartReader:
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", rules.usage)
    declared = request.content_length
    if declared is not None and declared > rules.max_bytes + _BODY_SLACK:
        raise too_large(rules)
    try:
        return MultipartReader(
            request.headers,
            request.content,
            max_field_size=MAX_HEADER_LINE,
            max_headers=MAX_PART_HEADERS,
        )
    except ValueError:  # no boundary, or one over 70 characters
        raise _malformed(
            rules,
            "Content-Type multipart/form-data needs a boundary parameter of 1-70 characters",
        ) from None


async def _read(reader: MultipartReader, rules: Rules, path: Path, out: BinaryIO) -> Upload:
    fields: dict[str, str] = {}
    upload: Upload | None = None
    while True:
        try:
            part = await asyncio.wait_for(reader.next(), rules.idle_timeout_s)
        except TimeoutError:
            raise body_timeout(rules.idle_timeout_s) from None
        except _READ_ERRORS:
            where = "after a part" if upload is not None or fields else "at its start"
            raise _malformed(
                rules,
                f"the multipart body is malformed {where}: a boundary line or part headers "
                "were expected (is the body cut short, or the boundary not the one declared?)",
            ) from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise _invalid(rules, "a nested multipart part is not accepted")
        if hdrs.CONTENT_DISPOSITION not in part.headers:  # RFC 7578 4.2: every part has one
            raise _malformed(
                rules,
                "a part has no Content-Disposition header, or the body ends without its "
                "closing boundary (the boundary followed by '--')",
            )
        encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").strip().lower()
        if encoding not in _PLAIN_ENCODINGS or hdrs.CONTENT_ENCODING in part.headers:
            raise _malformed(rules, "send each part as it is, without a transfer encoding")
        name = part.name
        if name == rules.file_field:
            if upload is not None:
                raise _invalid(rules, f"send one file, in one part named '{rules.file_field}'")
            upload = await _save(part, rules, path, out)
        elif name is not None and name in rules.text_fields:
            if name in fields:
                raise _invalid(rules, f"the field '{name}' was sent twice")
            fields[name] = await _text(part, name, rules.text_fields[name], rules)
        else:
            shown = "without a name" if name is None else f"{name[:64]!r}"
            raise _invalid(rules, f"unexpected part {shown}")
    if upload is None:
        raise _invalid(rules, f"no part named '{rules.file_field}'")
    upload.fields = fields
    return upload


async def _read_chunk(part: BodyPartReader, rules: Rules) -> bytes:
    """The part's next bytes, b"" at its end."""
    try:
        return await asyncio.wait_for(part.read_chunk(CHUNK_BYTES), rules.idle_timeout_s)
    except TimeoutError:
        raise body_timeout(rules.idle_timeout_s) from None
    except _READ_ERRORS:
        raise _malformed(
            rules, "the multipart body ended before the closing boundary of a part"
        ) from None


async def _save(part: BodyPartReader, rules: Rules, path: Path, out: BinaryIO) -> Upload:
    declared = part.headers.get(hdrs.CONTENT_TYPE)
    media = (declared or "").partition(";")[0].strip().lower()
    if (
        rules.declared_types
        and media not in ("", "application/octet-stream")
        and not media.startswith(rules.declared_types)
    ):
        code, message = rules.sniff_error
        raise ApiError(422, code, f"{message} (it was sent as {media[:80]!r})")
    size = 0
    head = b""
    while chunk := await _read_chunk(part, rules):
        size += len(chunk)
        if size > rules.max_bytes:
            raise too_large(rules)
        if len(head) < HEAD_BYTES:
            head += chunk[: HEAD_BYTES - len(head)]
        await asyncio.to_thread(out.write, chunk)
    if size == 0:
        raise _invalid(rules, "the file is empty")
    if rules.sniff is not None and not rules.sniff(head):
        raise ApiError(422, *rules.sniff_error)
    await asyncio.to_thread(out.flush)
    return Upload(path, size, part.filename, declared, {})


async def _text(part: BodyPartReader, name: str, limit: int, rules: Rules) -> str:
    data = b""
    while chunk := await _read_chunk(part, rules):
        data += chunk
        if len(data) > limit:
            raise _invalid(rules, f"the field '{name}' is longer than {limit} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _invalid(rules, f"the field '{name}' is not UTF-8 text") from None
