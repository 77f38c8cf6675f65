"""Whose levels do blind readers side with on AASCE films: the labels' or the service's?

    .venv/bin/python scripts/level_sheets.py ../shared/data/aasce-train/images --out SHEETS --only FILM ...
    (readers name the T1 and L5 boxes on the sheets, blind to labels and service: {"reader": N, "films": {FILM:
     {"t1_box": .., "l5_box": .., ...}}} per reader)
    .venv/bin/python scripts/level_audit.py ../shared/data/aasce-train --sheets SHEETS --groups GROUPS.json \
        --readings READER0.json READER1.json ... --json docs/evaluation/aasce_level_audit.json

GROUPS.json: {"rule": "...", "groups": {"shifted": [FILM, ...], "control": [...]}} (this script's output too).
Per film and end, the label's box is the numbered box whose centre is nearest the label's T1 (L5) centre, the
service's the one nearest the served T1 (L5), read through the endpoint's function
(`spine_engine.measurement.landmark_reading`); each reading sides with both (they agree), the labels, the service
or neither. `--readings` also takes this script's own output, so the committed file can be scored again. Nothing
served depends on it.
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

from level_sheets import read_boxes  # noqa: E402

from spine_engine.decoding import decode_image  # noqa: E402
from spine_engine.measurement import landmark_reading  # noqa: E402
from spine_engine.registry import ModelRegistry  # noqa: E402
from spine_engine.settings import EngineSettings  # noqa: E402
from training.datasets import read_aasce_dataset  # noqa: E402

ENDS = {"t1": 0, "l5": -1}  # end -> index among the 17 vertebrae


def nearest_box(box_centres: np.ndarray, point: np.ndarray) -> int:
    return int(np.linalg.norm(box_centres - point, axis=1).argmin())


def side(reader_box: float | None, label_box: int, served_box: int) -> str:
    """Which of the two a reader's box agrees with: "both", "labels", "service" or "neither"."""
    if reader_box == label_box and reader_box == served_box:
        return "both"
    if reader_box == label_box:
        return "labels"
    if reader_box == served_box:
        return "service"
    return "neither"


def load_readings(paths: list[Path]) -> list[dict]:
    readings: list[dict] = []
    for path in paths:
        data = json.loads(path.read_text())
        readings.extend(data.get("readings", [data]))
    return readings


def audit(data: Path, sheets: Path, groups: dict[str, list[str]], readings: list[dict], models: Path) -> dict:
    samples = {s.name: s for s in read_aasce_dataset(data)}
    registry = ModelRegistry.load(models, providers=["CPUExecutionProvider"], warmup=False)
    policy = EngineSettings().policy()
    tally: Counter[str] = Counter()
    films: dict[str, dict] = {}
    for group, names in groups.items():
        for name in names:
            sample = samples[name]
            pixels = decode_image(sample.image_path.read_bytes(), 10**9, name).pixels
            h, w = pixels.shape[:2]
            labelled = sample.corners(h, w).mean(axis=1)
            served = landmark_reading(registry, pixels, policy).vertebrae.corners().mean(axis=1)
            boxes = read_boxes(sheets, name).mean(axis=1)
            row: dict = {"group": group, "label_box": {}, "served_box": {}, "sides": []}
            for end, index in ENDS.items():
                row["label_box"][end] = nearest_box(boxes, labelled[index])
                row["served_box"][end] = nearest_box(boxes, served[index])
            for reading in readings:
                answer = reading["films"].get(name)
                if answer is None:
                    continue
                sides = {end: side(answer.get(f"{end}_box"), row["label_box"][end], row["served_box"][end]) for end in ENDS}
                row["sides"].append({"reader": reading["reader"], **sides})
                tally.update(f"{group} {end} {s}" for end, s in sides.items())
            films[name] = row
    return {"tally": dict(sorted(tally.items())), "films": films}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--sheets", type=Path, required=True)
    parser.add_argument("--groups", type=Path, required=True)
    parser.add_argument("--readings", type=Path, nargs="+", required=True)
    parser.add_argument("--models", type=Path, default=REPO / "exported_models")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    spec = json.loads(args.groups.read_text())
    readings = load_readings(args.readings)
    out = {"rule": spec.get("rule"), "groups": spec["groups"]}
    out.update(audit(args.data, args.sheets, spec["groups"], readings, args.models))
    out["readings"] = readings
    print(json.dumps(out["tally"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
