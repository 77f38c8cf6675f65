"""The Cobb overlay draws each curve's end-vertebra lines and angle where the vertebrae are."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spine_core.cobb import LEVELS, N_VERTEBRAE, cobb_angles
from spine_core.vertebrae import Vertebra
from spine_engine.measurement_overlay import CURVE_COLOURS, draw_cobb

HEIGHT, WIDTH = 1400, 600


def tilted_spine() -> list[Vertebra]:
    vertebrae = []
    for i, level in enumerate(LEVELS):
        tilt = np.radians({4: 15.0, 10: -15.0}.get(i, 0.0))  # T5 and T11: a 30 degree curve
        across, down = np.array([np.cos(tilt), np.sin(tilt)]), np.array([-np.sin(tilt), np.cos(tilt)])
        c = np.array([WIDTH / 2, 120.0 + 70 * i])
        corners = np.array([c - 35 * across - 24 * down, c + 35 * across - 24 * down,
                            c - 35 * across + 24 * down, c + 35 * across + 24 * down])  # fmt: skip
        vertebrae.append(Vertebra(level, corners, 1.0, 3000))
    return vertebrae


def coloured_pixels(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    return np.argwhere(np.all(np.asarray(image) == colour, axis=2))  # (row, col)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_end_vertebra_lines_and_text_are_drawn_at_the_curve(scale: float) -> None:
    vertebrae = tilted_spine()
    cobb = cobb_angles(np.stack([v.corners for v in vertebrae]), HEIGHT)
    main = cobb.curves[0]
    assert (main.name, main.upper_end, main.lower_end) == ("main_thoracic", "T5", "T11")
    background = np.full((round(HEIGHT * scale), round(WIDTH * scale), 3), 40, dtype=np.uint8)

    drawn = draw_cobb(background, cobb, vertebrae, scale=scale)

    assert drawn.size == (background.shape[1], background.shape[0]) and drawn.mode == "RGB"
    red = coloured_pixels(drawn, CURVE_COLOURS["main_thoracic"])
    assert len(red) > 50
    rows = red[:, 0] / scale
    t5_top, t11_bottom = vertebrae[4].corners[:2, 1].mean(), vertebrae[10].corners[2:, 1].mean()
    # Something red at both end vertebrae's endplates (lines), and nothing far above or below them.
    assert np.any(np.abs(rows - t5_top) < 20) and np.any(np.abs(rows - t11_bottom) < 20)
    assert rows.min() > t5_top - 60 and rows.max() < t11_bottom + 60
    # The lines reach beyond the vertebra on both sides.
    cols = red[:, 1] / scale
    assert cols.min() < WIDTH / 2 - 50 and cols.max() > WIDTH / 2 + 50
    assert np.asarray(background).max() == 40  # the input was not drawn on


def test_small_curves_can_be_left_out_and_pil_images_are_accepted() -> None:
    vertebrae = tilted_spine()
    cobb = cobb_angles(np.stack([v.corners for v in vertebrae]), HEIGHT)
    image = Image.new("L", (WIDTH, HEIGHT), 0)
    drawn = draw_cobb(image, cobb, vertebrae, min_angle_deg=cobb.max_deg + 1)
    assert np.asarray(drawn).max() == 0
    assert len(vertebrae) == N_VERTEBRAE


def test_the_angle_text_stays_inside_a_narrow_image() -> None:
    vertebrae = tilted_spine()
    cobb = cobb_angles(np.stack([v.corners for v in vertebrae]), HEIGHT)
    narrow = np.zeros((HEIGHT, 360, 3), dtype=np.uint8)  # the spine's right side is near the edge
    drawn = draw_cobb(narrow, cobb, vertebrae)
    red = coloured_pixels(drawn, CURVE_COLOURS["main_thoracic"])
    apex = vertebrae[LEVELS.index(cobb.curves[0].apex)].corners
    text_band = red[np.abs(red[:, 0] - apex[:, 1].mean()) < 15]  # rows of the text, away from the end lines
    assert len(text_band) > 0  # drawn, not clipped off the right edge
    assert text_band[:, 1].max() < apex[:, 0].min()  # to the left of the apex vertebra
