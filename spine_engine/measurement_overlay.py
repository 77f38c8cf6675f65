"""Draws the Cobb measurement on an overlay image: each curve's end-vertebra lines and its angle.

For each curve the line of its upper end vertebra is drawn across that vertebra's top endplate and the
line of its lower end vertebra across its bottom endplate, both extended to either side so the angle
between them can be seen. Each line runs along the direction the angle was measured on (the vertebra's
left-side midpoint to right-side midpoint, as the AASCE organisers measure), placed at the endplate,
so the drawing and the number agree. The text "<curve> <angle>° (<upper>-<lower>)" sits beside the apex.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spine_core.cobb import CobbResult
from spine_core.vertebrae import Vertebra

CURVE_COLOURS = {
    "main_thoracic": (255, 64, 64),
    "proximal_thoracic": (64, 200, 255),
    "thoracolumbar_lumbar": (255, 210, 0),
}
CURVE_SHORT = {"main_thoracic": "MT", "proximal_thoracic": "PT", "thoracolumbar_lumbar": "TL/L"}
LINE_EXTENSION = 0.9  # of the vertebra's width, beyond each side


def _line_at(corners: np.ndarray, edge: str, scale: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """End points of the measured direction drawn through the top ("top") or bottom endplate's midpoint."""
    tl, tr, bl, br = corners * scale
    direction = (tr + br) / 2 - (tl + bl) / 2
    width = float(np.linalg.norm(direction))
    unit = direction / width
    centre = (tl + tr) / 2 if edge == "top" else (bl + br) / 2
    half = width * (0.5 + LINE_EXTENSION)
    return tuple(centre - half * unit), tuple(centre + half * unit)


def draw_cobb(
    image: Image.Image | np.ndarray,
    cobb: CobbResult,
    vertebrae: Sequence[Vertebra],
    scale: float = 1.0,
    min_angle_deg: float = 0.0,
) -> Image.Image:
    """A copy of `image` (RGB) with each curve's end-vertebra lines and angle drawn on it.

    `scale` maps original-pixel coordinates onto `image` (its width / the radiograph's width) when the
    overlay was drawn smaller; curves under `min_angle_deg` are left out.
    """
    canvas = Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image.copy()
    canvas = canvas.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    by_level = {v.level: v for v in vertebrae}
    line_width = max(2, round(canvas.width / 300))
    font = ImageFont.load_default(size=max(12, canvas.width // 30))
    for curve in cobb.curves:
        if curve.angle_deg < min_angle_deg or curve.upper_end not in by_level or curve.lower_end not in by_level:
            continue
        colour = CURVE_COLOURS.get(curve.name, (255, 255, 255))
        draw.line(_line_at(by_level[curve.upper_end].corners, "top", scale), fill=colour, width=line_width)
        draw.line(_line_at(by_level[curve.lower_end].corners, "bottom", scale), fill=colour, width=line_width)
        apex = by_level.get(curve.apex, by_level[curve.upper_end]).corners * scale
        text = f"{CURVE_SHORT.get(curve.name, curve.name)} {curve.angle_deg:.1f}° ({curve.upper_end}-{curve.lower_end})"
        text_width = draw.textlength(text, font=font)
        x = float(apex[:, 0].max()) + 2 * line_width  # right of the apex, or left of it when that runs off
        if x + text_width > canvas.width:
            x = max(0.0, float(apex[:, 0].min()) - 2 * line_width - text_width)
        anchor = (x, float(apex[:, 1].mean()))
        draw.text(anchor, text, fill=colour, font=font, stroke_width=max(1, line_width // 2), stroke_fill=(0, 0, 0))
    return canvas
