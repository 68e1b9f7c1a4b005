"""The frames a render worker and its pool exchange over the worker's stdin and stdout.

A frame is an 8-byte header (two big-endian uint32: the JSON part's length, the binary part's
length), a JSON object, and bytes: the portrait going in, the encoded pictures (base64, one
after the other, their lengths in the JSON) coming out. Kept apart from the JSON so that
neither side parses megabytes of text.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import IO, Any

HEADER = struct.Struct(">II")
MAX_JSON_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 30


class ProtocolError(Exception):
    """A frame that breaks the protocol (the other side is not a render worker, or is gone)."""


def pack(message: Mapping[str, Any], payload: bytes = b"") -> bytes:
    text = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(text), len(payload)) + text + payload


def _lengths(header: bytes) -> tuple[int, int]:
    size, payload = HEADER.unpack(header)
    if size > MAX_JSON_BYTES or payload > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"frame too large ({size} + {payload} bytes)")
    return size, payload


def _message(text: bytes) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("frame is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


async def read(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """The next frame; asyncio.IncompleteReadError when the stream ends first."""
    size, payload = _lengths(await reader.readexactly(HEADER.size))
    message = _message(await reader.readexactly(size))
    return message, await reader.readexactly(payload) if payload else b""


def read_sync(stream: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """The next frame from a blocking stream; None at its end."""
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    size, payload = _lengths(header)
    text = _read_exactly(stream, size)
    data = _read_exactly(stream, payload) if payload else b""
    if text is None or data is None:
        raise ProtocolError("the stream ended inside a frame")
    return _message(text), data


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
