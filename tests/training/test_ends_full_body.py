"""The full-body films' chain bodies labelled from the hand marks (`training.ends_full_body`): which body each
marked end anchors, how far the labels reach, what a missed body and an unsure end do."""

from __future__ import annotations

import numpy as np

from spine_core.vertebra_ends import ENDS_CLASSES
from training.ends_full_body import chain_classes, fold_of

STEP = 100.0


def straight_chain(n: int, missing: tuple[int, ...] = ()) -> np.ndarray:
    """(k, 4, 2) bodies 60 px tall every STEP px down a straight spine, those in `missing` left out."""
    bodies = []
    for i in range(n):
        if i in missing:
            continue
        top, bottom = i * STEP + 20, i * STEP + 80
        bodies.append([[100, top], [160, top], [100, bottom], [160, bottom]])
    return np.array(bodies, dtype=float)


def names(classes: np.ndarray) -> list[str]:
    return [ENDS_CLASSES[c] if c >= 0 else "-" for c in classes]


def test_the_marked_ends_anchor_their_bodies_and_label_those_around_them():
    chain = straight_chain(24)  # body 4 is T1 (upper endplate at y 420), body 20 L5 (lower endplate at y 2080)
    got = names(chain_classes(chain, t1_top_y=425.0, l5_bottom_y=2075.0))
    assert got[:8] == ["above"] * 3 + ["C7", "T1", "T2", "middle", "middle"]
    assert got[8:17] == ["-"] * 9  # the middle of the chain is left to the AASCE crops
    assert got[17:] == ["middle", "middle", "L4", "L5", "S1", "below", "below"]


def test_a_missed_body_keeps_its_slot():
    chain = straight_chain(24, missing=(6,))  # the chain skips T3: the gap twice the others leaves its slot
    got = names(chain_classes(chain, t1_top_y=420.0, l5_bottom_y=None))
    assert got[3:7] == ["C7", "T1", "T2", "middle"]  # body 7 (T4) is middle, not T3 counted as T2's neighbour
    assert got[:3] == ["above"] * 3


def test_an_end_marked_between_bodies_or_not_used_labels_nothing():
    chain = straight_chain(24)
    assert (chain_classes(chain, t1_top_y=470.0, l5_bottom_y=None) == -1).all()  # half a step from any endplate
    assert (chain_classes(chain, t1_top_y=None, l5_bottom_y=None) == -1).all()
    only_l5 = names(chain_classes(chain, t1_top_y=None, l5_bottom_y=2080.0))
    assert only_l5[20] == "L5" and only_l5[:17] == ["-"] * 17


def test_ends_that_disagree_on_a_body_leave_it_out():
    chain = straight_chain(10)  # T1 marked on body 1, L5 on body 5: 4 bodies apart where anatomy has 16
    got = names(chain_classes(chain, t1_top_y=120.0, l5_bottom_y=580.0))
    # body 2 is T2 from the top but L2 ("middle") from the bottom, body 4 T4 ("middle") but L4: both left out;
    # body 3 is "middle" either way
    assert got == ["C7", "T1", "-", "middle", "-", "L5", "S1", "below", "below", "-"]


def test_films_are_dealt_into_folds_by_name():
    folding = fold_of(["c.jpg", "a.jpg", "b.jpg", "d.jpg"], 3)
    assert folding == {"a.jpg": 0, "b.jpg": 1, "c.jpg": 2, "d.jpg": 0}
