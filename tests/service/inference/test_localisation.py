"""spine_engine.localisation: the two-pass flow on a fake registry, and the metric on the 5 large films."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage
from spine_service_testlib import load_script

from spine_engine.localisation import LocalisationSettings, localise

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "data"
FILMS = SHARED / "aasce-unlabelled"

H, W = 2000, 800
BODY_H, BODY_W, STEP, SPINE_TOP, LEFT = 30, 40, 40, 600, 380
SPINE = [(SPINE_TOP + i * STEP, SPINE_TOP + i * STEP + BODY_H, LEFT, LEFT + BODY_W) for i in range(17)]
SKULL = (200, 320, 330, 480)
RIB = (900, 912, 470, 600)  # a bar beside the column, not touching it


def paint(boxes: list[tuple[int, int, int, int]], value: float = 1.0, base: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros((H, W), dtype=np.float32) if base is None else base.copy()
    for y0, y1, x0, x1 in boxes:
        out[y0:y1, x0:x1] = value
    return out


class FakeRegistry:
    """The registry's public surface that localisation uses. Its 'model' marks what is bright in its input.

    `first` is what the plain segmentation returns (a full-body film's first pass: the lower bodies and the
    skull); the windowed passes go through `infer` (the scheduler), like the real flow.
    """

    def __init__(self, first: np.ndarray, sees_anything: bool = True) -> None:
        self.first, self.sees_anything, self.runs = first, sees_anything, 0
        self.model = SimpleNamespace(
            name="Ap_Vertebra",
            entry=SimpleNamespace(input_name="image", output_name="mask"),
            inputs=[SimpleNamespace(name="image", dtype=np.dtype(np.float32))],
            input_hw=(512, 256),
            threshold=0.5,
        )

    def segmentation_model(self, structure: str) -> SimpleNamespace:
        return self.model

    def infer(self, work: list[tuple[SimpleNamespace, np.ndarray]]) -> list[np.ndarray]:
        self.runs += 1
        ((model, x),) = work
        assert model is self.model and x.shape == (1, 512, 256, 1) and x.dtype == np.float32
        return [(x > 0.5).astype(np.float32) * self.sees_anything]


def full_body_film() -> np.ndarray:
    return paint([*SPINE, SKULL, RIB], 1.0, np.full((H, W), 0.2, dtype=np.float32))


def test_full_body_film_gets_the_missed_bodies_and_loses_the_skull() -> None:
    first = paint([*SPINE[-6:], SKULL]) > 0  # the first pass: six lumbar bodies and a blob in the skull
    registry = FakeRegistry(first)
    result = localise(registry, full_body_film(), registry.first.copy())  # type: ignore[arg-type]
    near_spine = ndimage.binary_dilation(paint(SPINE) > 0, iterations=3)  # resampling blurs edges by a pixel or two
    assert result.passes == 3 and registry.runs == 2
    assert result.window is not None
    assert not (result.mask & ~near_spine).any()  # nothing off the spine: skull and rib dropped
    found = [box for box in SPINE if result.mask[box[0] : box[1], box[2] : box[3]].mean() > 0.8]
    assert set(SPINE[-6:]) <= set(found) and len(found) >= 6 + LocalisationSettings().min_gain
    assert np.array_equal(result.first_pass, first)


def test_a_film_cropped_to_the_spine_runs_once_and_keeps_the_plain_mask() -> None:
    tall = [(40 + i * 110, 40 + i * 110 + 90, 350, 460) for i in range(17)]  # spans 94 % of the height
    first = paint([*tall, RIB]) > 0
    registry = FakeRegistry(first)
    result = localise(registry, paint(tall), registry.first.copy())  # type: ignore[arg-type]
    assert result.passes == 1 and registry.runs == 0 and result.window is None
    assert result.chain_share > LocalisationSettings().max_chain_share
    assert np.array_equal(result.mask, first)  # unchanged: the AASCE films' Dice stays as it was


def test_windows_that_find_nothing_more_leave_the_plain_mask() -> None:
    first = paint([*SPINE[-6:], SKULL]) > 0
    registry = FakeRegistry(first, sees_anything=False)
    result = localise(registry, full_body_film(), registry.first.copy())  # type: ignore[arg-type]
    assert registry.runs >= 1 and result.window is None
    assert np.array_equal(result.mask, first)
    fake = FakeRegistry(first, False)
    chained = localise(fake, full_body_film(), first.copy(), LocalisationSettings(chain_first_pass=True))  # type: ignore[arg-type]
    assert np.array_equal(chained.mask, paint(SPINE[-6:]) > 0)  # or its chain, when asked


def _fov_check():
    return load_script("fov_check")


def test_corridor_scores_count_pixels_and_rows() -> None:
    fov = _fov_check()
    film = {"t1_top": [50, 100], "l5_bottom": [50, 300], "centreline": [[50, 200]]}
    mask = np.zeros((400, 100), dtype=bool)
    mask[100:200, 45:56] = True  # in the corridor (half-width 6 % of 200 = 12 px), the upper half of its rows
    mask[350:360, 45:56] = True  # below L5: outside
    scores = fov.corridor_scores(mask, film)
    assert scores["inside_px"] == 100 * 11 and scores["mask_px"] == 110 * 11
    rows = scores["rows"]  # 200 px + 2 % of 200 at each end
    assert rows == 201 + 2 * 4
    assert scores["row_coverage"] == pytest.approx(100 / rows)


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.skipif(not FILMS.is_dir(), reason="../shared/data/aasce-unlabelled is absent (only on development machines)")
def test_large_films_get_vertebrae_on_the_spine(tmp_path: Path) -> None:
    """The metric of docs/fov.md on the 5 marked films: localised masks beat the plain ones on both shares."""
    fov = _fov_check()
    out = tmp_path / "fov.json"
    # The 5 films this figure was set on (the marks file now holds 45; docs/fov.md reports those separately)
    marks = json.loads((Path(fov.__file__).parents[1] / "docs/fov/large_film_marks.json").read_text())
    five = {n: f for n, f in marks["films"].items() if n in {f"01-July-2019-{k}.jpg" for k in (1, 10, 11, 12, 13)}}
    assert len(five) == 5
    (tmp_path / "marks.json").write_text(json.dumps({**marks, "films": five}))
    assert fov.main([str(FILMS), "--marks", str(tmp_path / "marks.json"), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    plain, localised = summary["plain"], summary["localised"]
    assert localised["corridor_share_pooled"] > plain["corridor_share_pooled"] + 0.1
    assert localised["row_coverage_pooled"] > plain["row_coverage_pooled"]
    assert localised["corridor_share_pooled"] > 0.85


def test_bridged_row_coverage_fills_disc_gaps_only() -> None:
    fov = _fov_check()
    film = {"t1_top": [50, 0], "l5_bottom": [50, 1000], "centreline": []}  # length 1000: bridge 20 rows
    mask = np.zeros((1100, 100), dtype=bool)
    for top in range(0, 1000, 100):
        mask[top : top + 85, 40:60] = True  # bodies of 85 rows, discs of 15
    mask[400:500] = False  # one body missing: a 115-row gap
    scores = fov.corridor_scores(mask, film)
    assert scores["row_coverage"] < scores["row_coverage_bridged"] < 1.0
    # Uncovered: the missing body (385-499) and 985-1020 below the last body (the corridor ends 20 rows past L5).
    assert scores["rows"] - scores["covered_rows_bridged"] == 115 + 36
