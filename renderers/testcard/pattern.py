"""The testcard's machine-readable stamp: a row-major grid of black and white blocks that
survives video compression, carrying which frame this is and which audio it belongs to.

An observer that only sees the received video and audio decodes the stamp of each frame and
compares it with the audio it heard: that gives delivered fps, dropped frames, speech/video
pairing and the audio/video offset, without any side channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLUMNS = 32
ROWS = 3
PAYLOAD_BITS = COLUMNS * ROWS  # 96
LEVEL_FLOOR_DB = -80.0
"""Level byte 0 means this quiet or quieter; each step is 0.5 dB above it."""


@dataclass(frozen=True)
class Stamp:
    frame_index: int
    """Frame number since the session started (idle frames included), mod 2**32."""
    speech_position: int
    """Speech samples played before this frame's window, at the testcard's rate, mod 2**32."""
    level: int
    """RMS level of the frame's own audio window, 0..255 (see `level_to_byte`)."""
    speech: bool
    """True when the frame carries speech, False for idle frames."""
    segment: int
    """Utterance counter mod 128 (changes at every new utterance)."""


def level_to_byte(rms: float) -> int:
    """Map a linear RMS (full scale 1.0) to a byte with 0.5 dB steps from -80 dBFS."""
    if rms <= 0.0:
        return 0
    db = 20.0 * np.log10(rms)
    return int(np.clip(round((db - LEVEL_FLOOR_DB) * 2.0), 0, 255))


def byte_to_db(level: int) -> float:
    return LEVEL_FLOOR_DB + level / 2.0


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: rejects stamps damaged by compression instead of misreading them."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _payload(stamp: Stamp) -> bytes:
    flags = (0x80 if stamp.speech else 0) | (stamp.segment & 0x7F)
    body = (
        (stamp.frame_index & 0xFFFFFFFF).to_bytes(4, "big")
        + (stamp.speech_position & 0xFFFFFFFF).to_bytes(4, "big")
        + bytes([stamp.level & 0xFF, flags])
    )
    return body + _crc16(body).to_bytes(2, "big")


def block_size(width: int) -> int:
    return max(4, width // COLUMNS)


def stamp_bits(stamp: Stamp) -> np.ndarray:
    """The 96 payload bits, most significant first, as a (ROWS, COLUMNS) bool grid."""
    bits = np.unpackbits(np.frombuffer(_payload(stamp), dtype=np.uint8))
    return bits.reshape(ROWS, COLUMNS).astype(bool)


def draw_stamp(frame: np.ndarray, stamp: Stamp) -> None:
    """Paint the stamp into the top rows of an RGBA frame, in place."""
    size = block_size(frame.shape[1])
    grid = stamp_bits(stamp)
    # Upscale the bit grid to pixels in one step (cheap: no Python loop over blocks).
    pixels = np.kron(grid, np.ones((size, size), dtype=bool))
    h, w = pixels.shape
    frame[:h, :w, :3] = np.where(pixels[..., None], 255, 0).astype(np.uint8)


def read_stamp(frame: np.ndarray) -> Stamp | None:
    """Decode a stamp from an RGB(A) frame; None when the frame carries no valid stamp."""
    if frame.ndim != 3 or frame.shape[2] < 3:
        return None
    size = block_size(frame.shape[1])
    if frame.shape[0] < ROWS * size or frame.shape[1] < COLUMNS * size:
        return None
    # Average the middle half of each block so ringing at block edges does not matter.
    lo, hi = size // 4, size - size // 4
    area = frame[: ROWS * size, : COLUMNS * size, :3].astype(np.float32).mean(axis=2)
    blocks = area.reshape(ROWS, size, COLUMNS, size)[:, lo:hi, :, lo:hi].mean(axis=(1, 3))
    payload = np.packbits((blocks > 127.5).reshape(-1)).tobytes()
    body, crc = payload[:10], int.from_bytes(payload[10:12], "big")
    if _crc16(body) != crc:
        return None
    return Stamp(
        frame_index=int.from_bytes(body[0:4], "big"),
        speech_position=int.from_bytes(body[4:8], "big"),
        level=body[8],
        speech=bool(body[9] & 0x80),
        segment=body[9] & 0x7F,
    )
