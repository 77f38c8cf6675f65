"""How the served angles hold when a film differs from the AASCE films the way films from elsewhere do.

    python scripts/robustness_check.py ../shared/data/aasce-train [--every 3] [--models exported_models] [--json out.json]

Every `--every`-th validation film (the patient-grouped split) goes through what `POST /classify` runs
(`spine_engine.study.analyze_study`, the default policy, the spine check off so that every film is scored) as it
is and changed in one way at a time: mirrored, at half and a quarter of its size, padded to twice its width or
to 1.67 times its height (a cassette wider than the spine, a film with room above and below), its contrast
reduced, a gamma of 2, turned by 8 degrees. Printed per change: the SMAPE against the film's labelled angles
(a film without angles counts 100 %), the films answered, and on how many films the default label, and the
classifier's own (the `mean` rule), is right (Damaged: a labelled largest angle of at least 40 degrees). The
labels are the same in every row: what moves is the reading, and on the taller film the organisers' rule as well
(on an S curve, which angles it reports depends on whether the main curve lies in the image's upper half).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(REPO))

from spine_core.landmark_metrics import smape_pct  # noqa: E402
from spine_core.structures import CLASSES, DAMAGED_COBB_DEG  # noqa: E402
from spine_engine.engine import Engine  # noqa: E402
from spine_engine.registry import ModelRegistry  # noqa: E402
from spine_engine.settings import EngineSettings  # noqa: E402
from spine_engine.study import Film, StudyRequest, analyze_study  # noqa: E402
from training.datasets import read_aasce_dataset  # noqa: E402
from training.splits import aasce_sample_split  # noqa: E402

CHANGES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "as is": lambda im: im,
    "mirrored": ImageOps.mirror,
    "half size": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "quarter size": lambda im: im.resize((im.width // 4, im.height // 4), Image.Resampling.LANCZOS),
    "twice as wide (black margins)": lambda im: ImageOps.expand(im, border=(im.width // 2, 0), fill=0),
    "1.67x as tall (black margins)": lambda im: ImageOps.expand(im, border=(0, im.height // 3), fill=0),
    "low contrast": lambda im: im.point(lambda v: 80 + v * 0.35),
    "gamma 2": lambda im: im.point(lambda v: 255 * (v / 255) ** 2),
    "turned 8 degrees": lambda im: im.rotate(8, resample=Image.Resampling.BILINEAR, expand=True),
}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--every", type=int, default=3, help="every n-th validation film (default 3: 30 films)")
    parser.add_argument("--models", default=str(REPO / "exported_models"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    samples = read_aasce_dataset(Path(args.data))
    _, val_idx = aasce_sample_split(samples)
    registry = ModelRegistry.load(Path(args.models), providers=["CPUExecutionProvider"], warmup=False)
    policy = replace(EngineSettings().policy(), spine_check=False)
    engine = Engine(registry, policy)
    rows: dict[str, list[float]] = {name: [] for name in CHANGES}
    # per change: is the default label right, and the classifier's own (the mean rule), against angles.csv
    label_right: dict[str, list[tuple[bool, bool]]] = {name: [] for name in CHANGES}
    for i in val_idx[:: args.every]:
        sample = samples[i]
        film = Image.open(sample.image_path).convert("L")
        damaged = CLASSES[1] if sample.max_cobb >= DAMAGED_COBB_DEG else CLASSES[0]
        for name, change in CHANGES.items():
            request = StudyRequest(films=(Film(png(change(film)), f"{sample.name}.png", "AP"),), policy=policy, max_pixels=10**9)
            study = analyze_study(engine, request)
            cobb = study.views["AP"].reading.cobb
            answered = cobb is not None
            rows[name].append(smape_pct(np.array(cobb.aasce_angles_deg)[None], sample.cobb_angles[None]) if answered else 100.0)
            decision = study.decision
            label_right[name].append((decision.label == damaged, decision.rules["mean"].label == damaged))
    out = {
        name: {
            "films": len(v),
            "smape_pct": round(float(np.mean(v)), 2),
            "answered": int(sum(x < 100.0 for x in v)),
            "label_right": int(sum(a for a, _ in label_right[name])),
            "classifier_label_right": int(sum(b for _, b in label_right[name])),
        }
        for name, v in rows.items()
    }
    print("| film changed | films | answered | SMAPE | default label right | classifier's label right |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in out.items():
        print(
            f"| {name} | {row['films']} | {row['answered']} | {row['smape_pct']:.2f} % | {row['label_right']} | "
            f"{row['classifier_label_right']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"every": args.every, "models": args.models, "changes": out}, indent=1))


if __name__ == "__main__":
    main()
