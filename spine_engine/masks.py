"""Masks -> wire formats (base64 PNG, COCO uncompressed RLE) and boxes."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_base64(array: np.ndarray, compress_level: int = 6) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return base64.b64encode(buf.getvalue()).decode("ascii")


MASK_PNG_COMPRESS_LEVEL = 3  # zlib level for masks: see docs/benchmarks.md (pipeline section) for time and size per level


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_1bit(mask: np.ndarray, compress_level: int = MASK_PNG_COMPRESS_LEVEL) -> bytes:
    """Boolean mask -> 1-bit grayscale PNG bytes, written directly (rows bit-packed by numpy, no filter, zlib).

    The same format Pillow writes for a mode "1" image, without its per-pixel conversion of the bool array.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    rows = np.zeros((h, (w + 7) // 8 + 1), dtype=np.uint8)  # leading 0 per row: PNG filter type None
    if h and w:
        rows[:, 1:] = np.packbits(mask, axis=1)  # most significant bit first, as PNG wants
    header = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1 bit per pixel, grayscale, deflate, no filter, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.data, compress_level))
        + _png_chunk(b"IEND", b"")
    )


def mask_to_png(mask: np.ndarray) -> str:
    """Boolean mask -> base64 1-bit PNG (decodes to bool with Pillow, 0/255 with OpenCV)."""
    return base64.b64encode(png_1bit(mask)).decode("ascii")


def mask_to_rle(mask: np.ndarray) -> dict[str, list[int]]:
    """COCO uncompressed RLE: column-major run lengths, the first run counting background (0) pixels."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat = mask.ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [h, w], "counts": counts}


def bbox_xywh(mask: np.ndarray) -> list[int] | None:
    """COCO box [x, y, width, height] of the True pixels, None when the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
