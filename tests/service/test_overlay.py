"""The overlay: gray film, fills and outlines in each structure's colour, a legend naming demonstrations."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from spine_engine.overlay import legend, outline, overlay_png, render_overlay, structure_colour


def _film(h: int = 400, w: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((h, w)) * 200).astype(np.uint8)


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_outline_is_the_inner_band() -> None:
    mask = _box(20, 20, 5, 15, 5, 15)
    band = outline(mask, 2)
    assert band[5, 10] and band[6, 10] and not band[7, 10] and not band[10, 10]
    assert not (band & ~mask).any()


def test_fill_outline_and_gray_elsewhere() -> None:
    film = _film()
    mask = _box(400, 200, 200, 300, 60, 140)
    rgb = np.asarray(render_overlay(film, {"Ap_Vertebra": mask}))
    assert rgb.shape == (400, 200, 3)
    colour = structure_colour("Ap_Vertebra")
    assert tuple(rgb[200, 100]) == colour  # top edge: the solid outline
    inside = rgb[230:270, 80:120]
    assert (inside[..., 0] != inside[..., 1]).any()  # tinted fill
    assert tuple(inside[0, 0]) != colour
    below = rgb[320:, :]  # below the mask and away from the legend: untouched gray
    assert (below[..., 0] == below[..., 1]).all() and (below[..., 1] == below[..., 2]).all()


def test_demonstration_mask_is_dashed_outline_without_fill() -> None:
    film = _film()
    mask = _box(400, 200, 200, 300, 60, 140)
    rgb = np.asarray(render_overlay(film, {"Ap_Pedicle": mask}, demonstration={"Ap_Pedicle"}))
    inside = rgb[230:270, 80:120]
    assert (inside[..., 0] == inside[..., 1]).all()  # no fill
    top_edge = rgb[200, 60:140]
    coloured = (top_edge == structure_colour("Ap_Pedicle")).all(axis=1)
    assert 0 < coloured.sum() < len(coloured)  # dashed: some of the edge, not all


def test_legend_lists_exactly_the_drawn_structures() -> None:
    entries = legend(["Ap_Vertebra", "Ap_Pedicle"], demonstration={"Ap_Pedicle"})
    assert [(e.structure, e.validated) for e in entries] == [("Ap_Vertebra", True), ("Ap_Pedicle", False)]
    assert entries[0].color == "#{:02x}{:02x}{:02x}".format(*structure_colour("Ap_Vertebra"))
    film = _film()
    with_legend = np.asarray(render_overlay(film, {"Ap_Vertebra": np.zeros((400, 200), bool)}))
    without = np.asarray(render_overlay(film, {}))
    assert (with_legend[:4, :4] == 0).all()  # the legend's dark box, top-left
    assert (without[:4, :4] != 0).any()  # no structures, no legend
    assert (with_legend[-100:] == without[-100:]).all()


def test_png_and_max_side() -> None:
    film = _film(800, 300)
    mask = _box(800, 300, 100, 700, 100, 200)
    with Image.open(io.BytesIO(base64.b64decode(overlay_png(film, {"Ap_Vertebra": mask}, max_side=200)))) as small:
        assert small.format == "PNG" and small.mode == "RGB" and max(small.size) == 200


def test_annotator_gets_the_scale() -> None:
    seen: list[float] = []
    render_overlay(_film(800, 400), {}, max_side=200, annotate=lambda image, scale: seen.append(scale))
    assert seen == [0.25]
