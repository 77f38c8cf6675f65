"""T1 and L5 on the full-body films by the majority of three readings: the marks' reading and two more.

    python scripts/level_sheets.py ../shared/data/aasce-unlabelled --out SHEETS      # the sheets and the boxes
    python scripts/level_consensus.py --sheets SHEETS --readings READER_FILES [--marks docs/fov/large_film_marks.json]

Each reader names, on the sheets of `scripts/level_sheets.py` (the bodies the landmark model sees, numbered, no
level shown), the box of T1 and the box of L5: {"reader": N, "films": {NAME: {"t1_box": 2, "l5_box": 18,
"confidence_t1": ..., "confidence_l5": ..., "evidence": ...}}}; a body without a box of its own is given as the
nearest box's number plus or minus 0.5. The marks' own reading counts as the box whose endplate lies at its mark.
Per end, the box that at least two of the three readings name is kept; where all three differ, the marks' reading
stays and the end's confidence becomes low. A changed end moves its mark onto that box's endplate (T1: the upper
one, L5: the lower one; S1 top follows L5 at the L4-L5 disc's height, as the marks were made). The marks' earlier
values are kept per film as `second_reading`, the readers' answers as `third_reading`. `docs/fov.md` has the
audit of 2026-12-05 this was written for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "scripts"):
    if str(path) not in sys.path:  # run as a file from anywhere
        sys.path.insert(0, str(path))

from centreline_sheets import marks_json  # noqa: E402
from level_sheets import read_boxes  # noqa: E402

HALF_STEP = 0.6  # a mark further than this (in steps between box centres) from every box's endplate is between boxes


def endplates(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Upper and lower endplate midpoints (k, 2) of the boxes (TL, TR, BL, BR), and the median step between them."""
    step = float(np.median(np.diff(boxes.mean(axis=1)[:, 1]))) if len(boxes) > 1 else 1.0
    return boxes[:, :2].mean(axis=1), boxes[:, 2:].mean(axis=1), step


def box_of_mark(boxes: np.ndarray, mark_y: float, end: str) -> float:
    """The box whose T1 (upper) or L5 (lower) endplate lies at `mark_y`; k -/+ 0.5 for a body above/below box k."""
    upper, lower, step = endplates(boxes)
    ys = upper[:, 1] if end == "t1" else lower[:, 1]
    k = int(np.argmin(np.abs(ys - mark_y)))
    off = (mark_y - ys[k]) / step
    return float(k) if abs(off) <= HALF_STEP else k + 0.5 * float(np.sign(off))


def majority(marks_box: float, readers: list[float]) -> tuple[float, bool]:
    """The box at least two of the readings name (the marks' own first), and whether one did."""
    votes = Counter([marks_box, *readers])
    box, count = votes.most_common(1)[0]
    if count >= 2:
        return box, True
    return marks_box, False


def mark_at(boxes: np.ndarray, box: float, end: str) -> list[int]:
    """The endplate of `box` as an [x, y] mark; for a body without a box (a half number) one step beyond the first or
    last box, or between two boxes the endplate next to it (T1's upper: the box above's lower; L5's lower: the box
    below's upper)."""
    upper, lower, step = endplates(boxes)
    own = upper if end == "t1" else lower
    if box == round(box):
        point = own[int(box)].copy()
    elif box < 0:
        point = own[0] - [0.0, step]
    elif box > len(boxes) - 1:
        point = own[-1] + [0.0, step]
    else:
        k = int(np.floor(box))
        point = (lower[k] if end == "t1" else upper[k + 1]).copy()
    return [round(float(point[0])), round(float(point[1]))]


def s1_from_l5(boxes: np.ndarray, l5_box: float, l5_bottom: list[int]) -> list[int]:
    """S1's upper endplate: L5's lower one plus the L4-L5 disc height (from the boxes), as the marks were made."""
    upper, lower, _ = endplates(boxes)
    k = int(np.clip(round(l5_box), 1, len(boxes) - 1))
    disc = max(0.0, float(upper[k, 1] - lower[k - 1, 1]))
    return [l5_bottom[0], round(l5_bottom[1] + disc)]


def apply_consensus(marks: dict, boxes_by_film: dict[str, np.ndarray], readings: list[dict]) -> list[dict]:
    """The majority written into `marks["films"]` (in place); one row a film for the report."""
    answers: dict[str, list[tuple[int, dict]]] = {}
    for reading in readings:
        for name, answer in reading["films"].items():
            answers.setdefault(name, []).append((reading["reader"], answer))
    report = []
    for name, read in sorted(answers.items()):
        film, boxes = marks["films"][name], boxes_by_film[name]
        earlier = film.get("second_reading") or {k: film[k] for k in ("t1_top", "l5_bottom", "s1_top", "levels_uncertain")}
        film["second_reading"] = earlier
        film["third_reading"] = {f"reader {reader}": answer for reader, answer in read}
        row: dict = {"film": name}
        for end, key, box_key in (("t1", "t1_top", "t1_box"), ("l5", "l5_bottom", "l5_box")):
            own = box_of_mark(boxes, earlier[key][1], end)
            others = [float(answer[box_key]) for _, answer in read]
            box, agreed = majority(own, others)
            row[end] = {"marks": own, "readers": others, "kept": box, "agreed": agreed}
            film[key] = earlier[key] if box == own else mark_at(boxes, box, end)
        l5_moved = film["l5_bottom"] != earlier["l5_bottom"]
        film["s1_top"] = s1_from_l5(boxes, row["l5"]["kept"], film["l5_bottom"]) if l5_moved else earlier["s1_top"]
        film["levels_uncertain"] = bool(earlier["levels_uncertain"]) or not (row["t1"]["agreed"] and row["l5"]["agreed"])
        report.append(row)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sheets", type=Path, required=True, help="the folder of level_sheets.py (STEM_boxes.json)")
    parser.add_argument("--readings", type=Path, nargs="+", required=True)
    parser.add_argument("--marks", type=Path, default=REPO / "docs" / "fov" / "large_film_marks.json")
    args = parser.parse_args(argv)
    marks = json.loads(args.marks.read_text())
    readings = [json.loads(path.read_text()) for path in args.readings]
    names = {name for reading in readings for name in reading["films"]}
    boxes = {name: read_boxes(args.sheets, name) for name in names}
    report = apply_consensus(marks, boxes, readings)
    args.marks.write_text(marks_json(marks) + "\n")
    for row in report:
        moved = [end for end in ("t1", "l5") if row[end]["kept"] != row[end]["marks"]]
        print(row["film"], {end: (row[end]["marks"], row[end]["readers"], row[end]["kept"]) for end in ("t1", "l5")}, moved or "")
    changed = {end: sum(row[end]["kept"] != row[end]["marks"] for row in report) for end in ("t1", "l5")}
    unresolved = {end: sum(not row[end]["agreed"] for row in report) for end in ("t1", "l5")}
    print(f"{len(report)} films: ends moved {changed}, all three readings apart {unresolved}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
