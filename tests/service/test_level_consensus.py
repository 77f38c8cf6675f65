"""scripts/level_consensus.py: T1 and L5 kept where two of three readings agree, the marks moved onto that box."""

from __future__ import annotations

import numpy as np
import pytest
from spine_service_testlib import load_script


def _script():
    return load_script("level_consensus")


def _boxes(n: int = 20, top: float = 100.0, body: float = 80.0, disc: float = 20.0) -> np.ndarray:
    """n level boxes 100 px wide down x = 500: TL, TR, BL, BR."""
    tops = top + np.arange(n) * (body + disc)
    return np.stack([[[450, t], [550, t], [450, t + body], [550, t + body]] for t in tops]).astype(float)


def _film(boxes: np.ndarray, t1: int, l5: int) -> dict:
    return {
        "t1_top": [500, int(boxes[t1, 0, 1])],
        "l5_bottom": [500, int(boxes[l5, 2, 1])],
        "s1_top": [500, int(boxes[l5, 2, 1]) + 20],
        "levels_uncertain": False,
    }


def test_a_mark_is_read_back_as_its_box_and_a_body_without_one_as_a_half() -> None:
    consensus, boxes = _script(), _boxes()
    assert consensus.box_of_mark(boxes, boxes[2, 0, 1], "t1") == 2.0
    assert consensus.box_of_mark(boxes, boxes[18, 2, 1], "l5") == 18.0
    assert consensus.box_of_mark(boxes, boxes[0, 0, 1] - 100, "t1") == -0.5  # a body above the first box
    assert consensus.mark_at(boxes, -0.5, "t1") == [500, int(boxes[0, 0, 1]) - 100]
    assert consensus.mark_at(boxes, 18.0, "l5") == [500, int(boxes[18, 2, 1])]


@pytest.mark.parametrize(
    ("marks_box", "readers", "kept", "agreed"),
    [(2.0, [3.0, 3.0], 3.0, True), (2.0, [2.0, 3.0], 2.0, True), (2.0, [3.0, 4.0], 2.0, False), (2.0, [1.0, 1.0], 1.0, True)],
)
def test_two_of_three_decide_and_the_marks_stay_when_all_differ(marks_box, readers, kept, agreed) -> None:
    assert _script().majority(marks_box, readers) == (kept, agreed)


def test_consensus_moves_the_ends_two_readers_agree_on_and_keeps_the_earlier_reading() -> None:
    consensus, boxes = _script(), _boxes()
    marks = {"films": {"a.jpg": _film(boxes, 2, 18), "b.jpg": _film(boxes, 1, 17)}}
    readings = [
        {"reader": 0, "films": {"a.jpg": {"t1_box": 1, "l5_box": 17}, "b.jpg": {"t1_box": 1, "l5_box": 18}}},
        {"reader": 1, "films": {"a.jpg": {"t1_box": 1, "l5_box": 18}, "b.jpg": {"t1_box": 0, "l5_box": 19}}},
    ]
    report = consensus.apply_consensus(marks, {"a.jpg": boxes, "b.jpg": boxes}, readings)
    a, b = marks["films"]["a.jpg"], marks["films"]["b.jpg"]
    # a: both readers put T1 one box higher -> moved; L5: one reader agrees with the marks -> kept
    assert a["t1_top"] == [500, int(boxes[1, 0, 1])] and a["l5_bottom"] == [500, int(boxes[18, 2, 1])]
    assert a["second_reading"]["t1_top"] == [500, int(boxes[2, 0, 1])]
    assert a["third_reading"]["reader 1"]["t1_box"] == 1
    assert not a["levels_uncertain"]
    # b: T1 kept (one reader agrees); L5 17 / 18 / 19: all differ -> the marks stay, the film is uncertain
    assert b["t1_top"] == [500, int(boxes[1, 0, 1])] and b["l5_bottom"] == [500, int(boxes[17, 2, 1])]
    assert b["levels_uncertain"]
    assert [r["t1"]["kept"] for r in report] == [1.0, 1.0] and not report[1]["l5"]["agreed"]
    # S1 stays where L5 did not move, and follows a moved L5 by the L4-L5 disc (20 px between the boxes)
    assert b["s1_top"] == _film(boxes, 1, 17)["s1_top"]
    marks["films"]["c.jpg"] = _film(boxes, 1, 17)
    both = [{"reader": r, "films": {"c.jpg": {"t1_box": 1, "l5_box": 18}}} for r in (0, 1)]
    consensus.apply_consensus(marks, {"c.jpg": boxes}, both)
    assert marks["films"]["c.jpg"]["l5_bottom"] == [500, int(boxes[18, 2, 1])]
    assert marks["films"]["c.jpg"]["s1_top"] == [500, int(boxes[18, 2, 1]) + 20]
