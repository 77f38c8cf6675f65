"""The overlay a person reads: the film in gray, each returned mask as a light fill and an outline, a legend.

Outlines keep overlapping structures apart where fills would mix; demonstration masks get a dashed
outline and no fill, and the legend names them as such.
"""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spine_core.preprocessing import to_grayscale
from spine_core.structures import STRUCTURES

# One colour per structure (RGB), stable across requests so overlays are comparable.
PALETTE: list[tuple[int, int, int]] = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
]
FILL_ALPHA = 0.25
DASH_PX = 6  # dash length of a demonstration mask's outline

# Draws on the finished overlay (e.g. measurements); gets the image and the film-to-overlay scale.
Annotator = Callable[[Image.Image, float], None]


@dataclass(frozen=True)
class LegendEntry:
    structure: str
    color: str  # "#rrggbb"
    validated: bool


def structure_colour(structure: str) -> tuple[int, int, int]:
    names = list(STRUCTURES)
    index = names.index(structure) if structure in names else zlib.crc32(structure.encode())  # stable, unlike hash()
    return PALETTE[index % len(PALETTE)]


def legend(structures: Collection[str], demonstration: Collection[str] = ()) -> list[LegendEntry]:
    """One entry per structure drawn, in order: its colour and whether its model is validated."""
    return [LegendEntry(s, "#{:02x}{:02x}{:02x}".format(*structure_colour(s)), s not in demonstration) for s in structures]


def display_gray(pixels: np.ndarray) -> np.ndarray:
    """Any decoded image -> 8-bit gray for display, stretched between the 0.5 and 99.5 percentiles."""
    gray = to_grayscale(pixels)
    lo, hi = np.percentile(gray, [0.5, 99.5])
    if hi - lo < 1e-6:
        return np.zeros(gray.shape, dtype=np.uint8)
    return (np.clip((gray - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's inner boundary band, `width` pixels thick."""
    inner = mask
    for _ in range(max(1, width)):
        inner = _erode(inner)
    return mask & ~inner


def _draw_legend(image: Image.Image, entries: list[LegendEntry]) -> None:
    if not entries:
        return
    size = max(12, min(image.size) // 30)
    font = ImageFont.load_default(size=size)
    lines = [e.structure + ("" if e.validated else " (demonstration)") for e in entries]
    draw = ImageDraw.Draw(image)
    pad, swatch = size // 2, size
    text_w = max(int(draw.textlength(line, font=font)) for line in lines)
    box_w, box_h = pad * 3 + swatch + text_w, pad + len(lines) * (size + pad)
    draw.rectangle((0, 0, box_w, box_h), fill=(0, 0, 0))
    for i, (entry, line) in enumerate(zip(entries, lines, strict=True)):
        y = pad + i * (size + pad)
        colour = structure_colour(entry.structure)
        if entry.validated:
            draw.rectangle((pad, y, pad + swatch, y + size), fill=colour)
        else:  # hollow: demonstration masks are outlines only
            draw.rectangle((pad, y, pad + swatch, y + size), outline=colour, width=max(2, size // 6))
        draw.text((pad * 2 + swatch, y), line, fill=(255, 255, 255), font=font)


def render_overlay(
    pixels: np.ndarray,
    masks: Mapping[str, np.ndarray],
    demonstration: Collection[str] = (),
    max_side: int | None = None,
    annotate: Annotator | None = None,
) -> Image.Image:
    """The overlay as an RGB image, at the original size unless `max_side` asks for a smaller one."""
    gray = Image.fromarray(display_gray(pixels))
    scale = 1.0
    if max_side and max(gray.size) > max_side:
        scale = max_side / max(gray.size)
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.Resampling.BILINEAR)
    rgb = np.repeat(np.asarray(gray, dtype=np.float32)[..., np.newaxis], 3, axis=2)
    width = max(2, round(max(gray.size) / 400))
    yy, xx = np.indices((gray.height, gray.width))
    dashes = ((xx + yy) // DASH_PX) % 2 == 0
    for structure, mask in masks.items():
        if mask.shape != (gray.height, gray.width):
            mask = np.asarray(Image.fromarray(mask).resize(gray.size, Image.Resampling.NEAREST))
        colour = np.array(structure_colour(structure), dtype=np.float32)
        edge = outline(mask, width)
        if structure in demonstration:
            edge &= dashes
        else:
            fill = mask & ~edge
            rgb[fill] = (1 - FILL_ALPHA) * rgb[fill] + FILL_ALPHA * colour
        rgb[edge] = colour
    image = Image.fromarray(rgb.round().astype(np.uint8), mode="RGB")
    if annotate is not None:
        annotate(image, scale)
    _draw_legend(image, legend(list(masks), demonstration))
    return image


def overlay_png(
    pixels: np.ndarray,
    masks: Mapping[str, np.ndarray],
    demonstration: Collection[str] = (),
    max_side: int | None = None,
    annotate: Annotator | None = None,
) -> str:
    """`render_overlay` as base64 PNG (a 2500x6500 RGB PNG is tens of megabytes once base64-encoded: use max_side)."""
    buf = io.BytesIO()
    render_overlay(pixels, masks, demonstration, max_side, annotate).save(buf, format="PNG", compress_level=3)
    return base64.b64encode(buf.getvalue()).decode("ascii")
