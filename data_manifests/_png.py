"""A minimal PNG writer (8-bit RGB or grayscale) with zlib, and a tiny bitmap font for captions."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["write_png", "draw_text", "text_width"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a ``uint8`` image ``(H, W)`` or ``(H, W, 3)`` as PNG (no filtering, zlib level 6)."""
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected uint8 (H,W) or (H,W,3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    color = 2 if img.ndim == 3 else 0
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rows], axis=1).tobytes()
    data = b"\x89PNG\r\n\x1a\n"
    data += _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    data += _chunk(b"IDAT", zlib.compress(raw, 6))
    data += _chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# 5x7 font: each glyph is 7 rows of 5 bits (MSB = leftmost column).
_FONT = {
    "A": "0E 11 11 1F 11 11 11", "B": "1E 11 11 1E 11 11 1E", "C": "0E 11 10 10 10 11 0E",
    "D": "1E 11 11 11 11 11 1E", "E": "1F 10 10 1E 10 10 1F", "F": "1F 10 10 1E 10 10 10",
    "G": "0E 11 10 17 11 11 0F", "H": "11 11 11 1F 11 11 11", "I": "0E 04 04 04 04 04 0E",
    "J": "07 02 02 02 02 12 0C", "K": "11 12 14 18 14 12 11", "L": "10 10 10 10 10 10 1F",
    "M": "11 1B 15 15 11 11 11", "N": "11 11 19 15 13 11 11", "O": "0E 11 11 11 11 11 0E",
    "P": "1E 11 11 1E 10 10 10", "Q": "0E 11 11 11 15 12 0D", "R": "1E 11 11 1E 14 12 11",
    "S": "0F 10 10 0E 01 01 1E", "T": "1F 04 04 04 04 04 04", "U": "11 11 11 11 11 11 0E",
    "V": "11 11 11 11 11 0A 04", "W": "11 11 11 15 15 15 0A", "X": "11 11 0A 04 0A 11 11",
    "Y": "11 11 0A 04 04 04 04", "Z": "1F 01 02 04 08 10 1F",
    "0": "0E 11 13 15 19 11 0E", "1": "04 0C 04 04 04 04 0E", "2": "0E 11 01 02 04 08 1F",
    "3": "1F 02 04 02 01 11 0E", "4": "02 06 0A 12 1F 02 02", "5": "1F 10 1E 01 01 11 0E",
    "6": "06 08 10 1E 11 11 0E", "7": "1F 01 02 04 08 08 08", "8": "0E 11 11 0E 11 11 0E",
    "9": "0E 11 11 0F 01 02 0C", "-": "00 00 00 1F 00 00 00", "_": "00 00 00 00 00 00 1F",
    ".": "00 00 00 00 00 0C 0C", ":": "00 0C 0C 00 0C 0C 00", "/": "01 01 02 04 08 10 10",
    "(": "02 04 08 08 08 04 02", ")": "08 04 02 02 02 04 08", "x": "00 00 11 0A 04 0A 11",
    " ": "00 00 00 00 00 00 00", "=": "00 00 1F 00 1F 00 00", "+": "00 04 04 1F 04 04 00",
    ",": "00 00 00 00 0C 04 08",
}


def _glyph(ch: str) -> np.ndarray:
    code = _FONT.get(ch, _FONT.get(ch.upper(), "1F 11 11 11 11 11 1F"))
    rows = [int(v, 16) for v in code.split()]
    return np.array([[(r >> (4 - c)) & 1 for c in range(5)] for r in rows], dtype=bool)


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn at ``scale``."""
    return len(text) * 6 * scale


def draw_text(canvas: np.ndarray, text: str, y: int, x: int, color: tuple[int, int, int] = (255, 255, 255),
              scale: int = 1) -> None:
    """Draw ``text`` on an ``(H, W, 3)`` uint8 canvas in place (clipped at the borders)."""
    h, w = canvas.shape[:2]
    for i, ch in enumerate(text):
        g = np.kron(_glyph(ch), np.ones((scale, scale), dtype=bool))
        gy, gx = y, x + i * 6 * scale
        y0, x0 = max(gy, 0), max(gx, 0)
        y1, x1 = min(gy + g.shape[0], h), min(gx + g.shape[1], w)
        if y0 >= y1 or x0 >= x1:
            continue
        sub = g[y0 - gy : y1 - gy, x0 - gx : x1 - gx]
        canvas[y0:y1, x0:x1][sub] = color
