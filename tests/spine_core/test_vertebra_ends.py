"""The ends model's vote in the level placement (a stand-in reader, no model needed), and its crops."""

from __future__ import annotations

import numpy as np
import pytest
from test_landmarks import _equal_chain, heads_for

from spine_core.landmark_reader import frame_to_source, read_vertebrae
from spine_core.landmarks import decode
from spine_core.preprocessing import UNET_INPUT_HW
from spine_core.vertebra_ends import (
    ENDS_CLASSES,
    ENDS_CROP_HW,
    PROBABILITY_FLOOR,
    ends_class,
    ends_crops,
    placement_log_likelihood,
)


def test_levels_map_to_their_classes():
    levels = np.array([-5, -2, -1, 0, 1, 2, 9, 14, 15, 16, 17, 18, 25])
    names = [ENDS_CLASSES[i] for i in ends_class(levels)]
    assert names == ["above", "above", "C7", "T1", "T2", "middle", "middle", "middle", "L4", "L5", "S1", "below", "below"]


def _reader_for(chain: np.ndarray, truth: np.ndarray, sure: float = 0.7, wrong: dict[int, int] | None = None):
    """A stand-in ends model: `sure` on each chain vertebra's true class (found by its centre's row), the rest spread;
    `wrong` gives some vertebrae (by chain index) a confident wrong class instead."""
    rows = chain.mean(axis=1)[:, 1]
    seen: list[np.ndarray] = []

    def read(corners: np.ndarray) -> np.ndarray:
        seen.append(corners)
        index = np.abs(corners.mean(axis=1)[:, 1][:, None] - rows[None]).argmin(axis=1)
        classes = ends_class(truth[index])
        for i, cls in (wrong or {}).items():
            classes[index == i] = cls
        probs = np.full((len(corners), len(ENDS_CLASSES)), (1 - sure) / (len(ENDS_CLASSES) - 1))
        probs[np.arange(len(corners)), classes] = sure
        return np.log(probs)

    read.seen = seen  # type: ignore[attr-defined]
    return read


@pytest.mark.parametrize("above", [0, 1, 2, 3])
def test_the_ends_model_places_the_levels_on_a_chain_longer_than_seventeen(above):
    """21 equally strong, equally wide peaks: only the ends model's answers say which 17 are T1..L5."""
    chain = _equal_chain(21)
    truth = np.arange(21) - above
    found = decode(heads_for(chain, np.full(21, 0.8)), read_ends=_reader_for(chain, truth))
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, chain[above : above + 17], atol=1e-3)


def test_one_confident_wrong_answer_does_not_move_the_placement():
    """The true C7 read as T1 with certainty: the floor caps what one crop can cost, its neighbours outvote it."""
    chain = _equal_chain(21)
    truth = np.arange(21) - 2
    read = _reader_for(chain, truth, wrong={1: ENDS_CLASSES.index("T1")})
    found = decode(heads_for(chain, np.full(21, 0.8)), read_ends=read)
    assert found is not None
    np.testing.assert_allclose(found.corners, chain[2:19], atol=1e-3)


def test_the_floor_bounds_one_answer():
    certain_c7 = np.log(np.where(np.arange(len(ENDS_CLASSES)) == ENDS_CLASSES.index("C7"), 1.0, 1e-12))[None]
    assert placement_log_likelihood(certain_c7, np.array([0])) == pytest.approx(np.log(PROBABILITY_FLOOR))
    assert placement_log_likelihood(certain_c7, np.array([-1])) == pytest.approx(0.0)


def _matches(seen: np.ndarray, chain: np.ndarray) -> np.ndarray:
    """Index into `chain` of each seen vertebra (all four corners equal), -1 where none is."""
    close = np.abs(seen[:, None] - chain[None]).max(axis=(2, 3)) < 1e-3
    return np.where(close.any(axis=1), close.argmax(axis=1), -1)


def test_the_reader_hands_the_ends_model_corners_in_the_films_pixels():
    """A film twice the frame's size: the corners the ends model is given are the chain's, in the film's pixels."""
    chain = _equal_chain(19)
    heads = heads_for(chain, np.full(19, 0.8))
    pixels = np.zeros((2 * UNET_INPUT_HW[0], 2 * UNET_INPUT_HW[1]), np.uint8)
    read = _reader_for(chain * 2, np.arange(19) - 1)
    reading = read_vertebrae(lambda batch: heads[None], pixels, first_heads=heads, read_ends=read)
    assert read.seen, "the ends model was not asked"
    assert (_matches(read.seen[0], chain * 2) >= 0).all()
    # T1-L5 spans under FULL_BODY_SHARE of this film: the window's pass asked it too, in the film's pixels again
    assert reading.passes == 2 and len(read.seen) == 2
    assert (_matches(read.seen[1], frame_to_source(chain, reading.frame)) >= 0).all()


def test_only_the_vertebrae_near_the_ends_are_asked():
    """On a 19-vertebra chain the placements start at C6, C7 or T1: the middle vertebrae are within T3..L3 (class
    `middle` whatever the placement; 4..14 here), so their crops are not cut; the placement is the one all answers give."""
    chain = _equal_chain(19)
    read = _reader_for(chain, np.arange(19) - 1)
    found = decode(heads_for(chain, np.full(19, 0.8)), read_ends=read)
    asked = sorted(_matches(read.seen[0], chain))
    assert asked == [0, 1, 2, 3, 15, 16, 17, 18]
    assert found is not None
    np.testing.assert_allclose(found.corners, chain[1:18], atol=1e-3)


def test_crops_are_the_models_input_shape_and_standardised():
    film = np.random.default_rng(0).integers(0, 255, (600, 300)).astype(np.uint8)
    crops = ends_crops(film, _equal_chain(5))
    assert crops.shape == (5, *ENDS_CROP_HW, 1)
    np.testing.assert_allclose(crops.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
