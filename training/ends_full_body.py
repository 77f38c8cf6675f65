"""Full-body films for the ends model: the bodies the landmark model finds on them, labelled from the hand marks.

    python -m training.ends_full_body ../shared/data/aasce-unlabelled --json docs/fov/ends_labels.json
    python -m training.ends_full_body ../shared/data/aasce-unlabelled --crops-of RUN [RUN ...] --held-out-by RUN

AASCE films are cropped close to T1 and L5, so the ends model (`training/ends.py`) seldom sees C7 with the first
ribs beside it, or S1 between the iliac wings, as a full-body film shows them: on the marked full-body films the
body it takes most for L5 is the L5 on 12 of 38 (docs/measurement.md). The marked full-body films
(`docs/fov/large_film_marks.json`: T1's upper and L5's lower endplate read by hand, with a confidence per end)
label the bodies the served landmark model finds there, on the pass the service keeps (the chain the ends model
is asked about when it serves): the body whose upper endplate is at the marked T1 top is T1, the next ones up C7
and "above", down T2 and "middle"; likewise L5 and the bodies around it. An end read with low confidence labels
nothing. `spine-train ends --full-body FILMS` adds these bodies' crops to the AASCE crops each epoch; `--folds N
--fold K` holds a fold of films out, so that the levels on them (`scripts/levels_check.py --held-out-by RUN`) and
the crop figures (`--crops-of`) say what films a run never saw get.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from spine_core.landmarks import chain_slots
from spine_core.preprocessing import to_grayscale
from spine_core.vertebra_ends import ENDS_CLASSES, ends_class

REPO = Path(__file__).resolve().parents[1]
MARKS = REPO / "docs" / "fov" / "large_film_marks.json"
LABELS = REPO / "docs" / "fov" / "ends_labels.json"
ANCHOR_TOLERANCE = 0.4  # steps: how near a body's endplate must lie to the marked one to be that end
T1_REACH = (-4, 3)  # levels labelled from a T1 anchor (C... to T4: "above", C7, T1, T2, "middle")
L5_REACH = (13, 19)  # and from an L5 anchor (L2 to below S1)


def chain_classes(corners: np.ndarray, t1_top_y: float | None, l5_bottom_y: float | None) -> np.ndarray:
    """Class index (into ENDS_CLASSES) of each chain body ((k, 4, 2) corners, top to bottom), -1 where unlabelled.

    A marked end (None: not used) anchors the body whose endplate lies within ANCHOR_TOLERANCE of its step; the
    bodies around it take their levels counted in the chain's slots (a gap about twice its neighbours' leaves a
    slot for a missed body, as in the served placement). A body the two ends label differently is left out."""
    out = np.full(len(corners), -1)
    if len(corners) < 3:
        return out
    centres = corners.mean(axis=1)
    gaps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    slots = chain_slots(centres, np.full(len(corners), float(np.median(gaps))))
    step = np.r_[gaps[:1], (gaps[:-1] + gaps[1:]) / 2, gaps[-1:]]  # each body's distance to its neighbours
    anchors = []
    for marked, endplate, level, reach in (
        (t1_top_y, corners[:, :2, 1].mean(axis=1), 0, T1_REACH),
        (l5_bottom_y, corners[:, 2:, 1].mean(axis=1), 16, L5_REACH),
    ):
        if marked is None:
            continue
        at = int(np.argmin(np.abs(endplate - marked)))
        if abs(endplate[at] - marked) < ANCHOR_TOLERANCE * step[at]:
            anchors.append((slots - slots[at] + level, reach))
    for levels, (low, high) in anchors:
        near = (levels >= low) & (levels <= high)
        classes = ends_class(levels)
        clash = near & (out >= 0) & (out != classes)
        out[near & (out < 0)] = classes[near & (out < 0)]
        out[clash] = -2
    out[out == -2] = -1
    return out


@dataclass
class LabelledBodies:
    """Full-body films (grayscale) and the chain bodies labelled on them."""

    names: list[str]
    pixels: list[np.ndarray]
    corners: list[np.ndarray]  # (k, 4, 2) each, film pixels
    classes: list[np.ndarray]  # (k,) class indices


def fold_of(names: list[str], folds: int) -> dict[str, int]:
    """Films dealt into folds by sorted name."""
    return {name: i % folds for i, name in enumerate(sorted(names))}


def held_out_films(labels: Path, folds: int, fold: int) -> list[str]:
    """The films of `labels` in fold `fold` of `folds` (none when `folds` is 0), sorted."""
    if not folds:
        return []
    return sorted(name for name, k in fold_of(list(json.loads(labels.read_text())["films"]), folds).items() if k == fold)


def load_bodies(
    films_dir: Path, labels: Path = LABELS, skip: Collection[str] = (), only: Collection[str] | None = None
) -> LabelledBodies:
    """The labelled bodies of every film in `labels` (or of those in `only`) but those in `skip`."""
    from spine_engine.decoding import decode_image

    films = json.loads(labels.read_text())["films"]
    out = LabelledBodies([], [], [], [])
    for name, film in sorted(films.items()):
        if name in skip or not film["classes"] or (only is not None and name not in only):
            continue
        pixels = decode_image((films_dir / name).read_bytes(), max_pixels=10**9, filename=name).pixels
        gray = pixels if pixels.ndim == 2 and pixels.dtype == np.uint8 else to_grayscale(pixels)
        out.names.append(name)
        out.pixels.append(gray)
        out.corners.append(np.asarray(film["corners"], dtype=np.float64))
        out.classes.append(np.array([ENDS_CLASSES.index(c) for c in film["classes"]]))
    return out


def label_films(films_dir: Path, marks_path: Path, models_dir: Path) -> dict:
    """Each marked full-body film's chain (the served landmark model, tilt model off), labelled from its marks."""
    from spine_engine.decoding import decode_image
    from spine_engine.measurement import landmark_reading
    from spine_engine.registry import ModelRegistry
    from spine_engine.settings import EngineSettings

    registry = ModelRegistry.load(models_dir, providers=["CPUExecutionProvider"], warmup=False)
    policy = replace(EngineSettings().policy(), tilt_model=False)
    marks = json.loads(marks_path.read_text())["films"]
    films: dict[str, dict] = {}
    for name, film in sorted(marks.items()):
        if film.get("kind") != "full_body":
            continue
        pixels = decode_image((films_dir / name).read_bytes(), max_pixels=10**9, filename=name).pixels
        reading = landmark_reading(registry, pixels, policy)
        chain = reading.chain_corners() if reading is not None else None
        if chain is None:
            films[name] = {"corners": [], "classes": [], "note": "no chain"}
            continue
        sure = film.get("level_reading", {})
        t1 = film["t1_top"][1] if sure.get("confidence_t1") != "low" else None
        l5 = film["l5_bottom"][1] if sure.get("confidence_l5") != "low" else None
        classes = chain_classes(chain, t1, l5)
        kept = classes >= 0
        films[name] = {
            "corners": np.round(chain[kept], 1).tolist(),
            "classes": [ENDS_CLASSES[c] for c in classes[kept]],
            "ends_used": [end for end, y in (("T1", t1), ("L5", l5)) if y is not None],
        }
    return {
        "about": "Chain bodies of the marked full-body films (the served landmark model's pass kept, film pixels "
        "x, y of TL, TR, BL, BR), labelled with the ends model's classes from docs/fov/large_film_marks.json by "
        "training.ends_full_body.chain_classes; an end read with low confidence labels nothing.",
        "films": films,
    }


def crop_figures(run_dirs: list[Path], films: LabelledBodies) -> dict[str, dict[str, float]]:
    """Each run's answers on these films' labelled bodies (crops cut at the chain's corners, as served): accuracy,
    and per film whether the body it gives the most T1 (L5) among those labelled around that end is the T1 (L5)."""
    from spine_core.vertebra_ends import ends_crops
    from training.tilt_export import load_runs

    out: dict[str, dict[str, float]] = {}
    for run in run_dirs:
        _, shape, (model,) = load_runs(
            [run], "vertebra_ends", outputs=len(ENDS_CLASSES), activation="softmax", output_name="ends"
        )
        right, picks = [], {"T1": [], "L5": []}
        for gray, corners, classes in zip(films.pixels, films.corners, films.classes, strict=True):
            probs = model.predict(ends_crops(gray, corners, shape.hw, shape.span), verbose=0)
            right += list(probs.argmax(axis=1) == classes)
            for end, around in (("T1", ("above", "C7", "T1", "T2")), ("L5", ("L4", "L5", "S1", "below"))):
                near = np.nonzero(np.isin(classes, [ENDS_CLASSES.index(c) for c in around]))[0]
                if ENDS_CLASSES.index(end) in classes[near]:
                    best = near[int(np.argmax(probs[near, ENDS_CLASSES.index(end)]))]
                    picks[end].append(bool(classes[best] == ENDS_CLASSES.index(end)))
        out[str(run)] = {
            "bodies": len(right),
            "accuracy": float(np.mean(right)),
            "t1_picked": int(sum(picks["T1"])),
            "t1_films": len(picks["T1"]),
            "l5_picked": int(sum(picks["L5"])),
            "l5_films": len(picks["L5"]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films_dir")
    parser.add_argument("--marks", default=str(MARKS))
    parser.add_argument("--models", default=str(REPO / "exported_models"))
    parser.add_argument("--json", default=str(LABELS), help="where the labels go (or, with --crops-of, are read)")
    parser.add_argument("--crops-of", nargs="+", default=None, help="ends runs: their answers on the labelled bodies ...")
    parser.add_argument("--held-out-by", default=None, help="... of the films this run (--folds) held out")
    args = parser.parse_args()
    if args.crops_of:
        held_out = json.loads((Path(args.held_out_by) / "run_info.json").read_text())["full_body_held_out"]
        bodies = load_bodies(Path(args.films_dir), Path(args.json), only=held_out)
        print(json.dumps(crop_figures([Path(r) for r in args.crops_of], bodies), indent=1))
        return
    out = label_films(Path(args.films_dir), Path(args.marks), Path(args.models))
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    counts: dict[str, int] = {}
    for film in out["films"].values():
        for c in film["classes"]:
            counts[c] = counts.get(c, 0) + 1
    print(f"{len(out['films'])} films; bodies per class: {counts}")


if __name__ == "__main__":
    main()
