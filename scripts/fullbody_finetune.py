"""Fine-tune the landmark model on full-body windows whose T1 and L5 were read by hand, one fold at a time.

    python scripts/fullbody_finetune.py ../shared/data/aasce-unlabelled --aasce-cache landmarks.npz \
        --init-landmarks served.weights.h5 --run-dir runs/fullbody_f0 --folds 2 --fold 0 [--epochs 6] [--aasce 150]

The AASCE crops show C7 and S1 cut or not at all; a full-body film's window shows them whole, and there the model
scores C7 above a faint L5 on some films (docs/fov.md). Training windows: each marked film of
`docs/fov/large_film_marks.json` framed as the service frames it (`read_vertebrae`'s window with the served model),
labelled with the bodies the served model finds there (`find_chain`) between the marked T1 top and L5 bottom:
exactly 17, or the film is left out (its count is off: a missed or doubled body). The corners are thus the
model's own; what the windows add is which 17 bodies are T1..L5 (and, through the ends head's targets, that
the bodies beyond are C7 and S1). Films are dealt into `--folds` folds by name; `--fold k` trains on the others
(`--fold -1`: on all), beside `--aasce` films of the AASCE training split (its validation split is untouched and
is the run's validation set, as in `spine-train landmarks`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(REPO))

from spine_core.cobb import cobb_angles  # noqa: E402
from spine_core.landmark_reader import read_vertebrae  # noqa: E402
from spine_core.landmarks import find_chain  # noqa: E402
from spine_core.preprocessing import CropBox, preprocess_crop  # noqa: E402
from spine_engine.decoding import decode_image  # noqa: E402
from spine_engine.registry import ModelRegistry  # noqa: E402


def window_sample(registry: ModelRegistry, pixels: np.ndarray, film: dict) -> tuple[np.ndarray, np.ndarray] | str:
    """(frame float32 HxW, (17, 4, 2) corners in it) for one marked film, or why it is left out."""
    model = registry.landmark_model()

    def run(batch: np.ndarray) -> np.ndarray:
        return registry.infer([(model, batch)])[0]

    reading = read_vertebrae(run, pixels, out_hw=tuple(model.input_hw))
    window: CropBox | None = reading.window
    if window is None or reading.heads is None:
        return "no window (the first pass spans most of the film)"
    frame = preprocess_crop(pixels, window)  # the training image: the window's frame, as the model saw it
    chain = find_chain(reading.heads)
    if chain is None:
        return "no chain in the window"
    to_frame = window.out_h / window.height
    t1_top = (film["t1_top"][1] - window.top) * to_frame
    l5_bottom = (film["l5_bottom"][1] - window.top) * to_frame
    centres = chain.corners.mean(axis=1)[:, 1]
    inside = chain.corners[(centres > t1_top) & (centres < l5_bottom)]
    if len(inside) != 17:
        return f"{len(inside)} bodies between the marked T1 and L5 in the window"
    return frame, inside


def build_windows(films_dir: Path, marks: dict, models: Path) -> tuple[dict, dict[str, str]]:
    registry = ModelRegistry.load(models, providers=["CPUExecutionProvider"], warmup=False)
    images, corners, cobb, names, skipped = [], [], [], [], {}
    for name, film in sorted(marks.items()):
        if film.get("kind") != "full_body":
            continue
        pixels = decode_image((films_dir / name).read_bytes(), max_pixels=10**9, filename=name).pixels
        got = window_sample(registry, pixels, film)
        if isinstance(got, str):
            skipped[name] = got
            continue
        frame, quads = got
        images.append(np.round(frame * 255.0).astype(np.uint8))
        corners.append(quads.astype(np.float32))
        cobb.append(cobb_angles(quads, frame.shape[0]).aasce_angles_deg)
        names.append(name)
    return {"images": np.stack(images), "corners": np.stack(corners), "cobb": np.array(cobb), "names": np.array(names)}, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films_dir", type=Path)
    parser.add_argument("--marks", type=Path, default=REPO / "docs" / "fov" / "large_film_marks.json")
    parser.add_argument("--models", type=Path, default=REPO / "exported_models")
    parser.add_argument("--aasce-cache", type=Path, required=True, help="`spine-train cache aasce-landmarks` output")
    parser.add_argument("--init-landmarks", required=True, help="the served model's weights (scripts/onnx_to_keras_weights.py)")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--fold", type=int, default=0, help="-1: train on every marked film")
    parser.add_argument("--aasce", type=int, default=150, help="AASCE training films beside the windows (each epoch)")
    parser.add_argument("--repeat", type=int, default=3, help="copies of each window per epoch")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args(argv)

    from training.datasets import rasterize_vertebrae
    from training.landmarks import load_landmark_cache, train_landmarks
    from training.splits import aasce_split
    from training.train import FitConfig

    marks = json.loads(args.marks.read_text())["films"]
    windows, skipped = build_windows(args.films_dir, marks, args.models)
    order = sorted(windows["names"])
    fold_of = {name: i % args.folds for i, name in enumerate(order)}
    use = [i for i, n in enumerate(windows["names"]) if args.fold < 0 or fold_of[n] != args.fold]
    data = load_landmark_cache(args.aasce_cache)
    train_idx, val_idx = aasce_split(data)
    rng = np.random.default_rng(0)
    aasce_train = sorted(rng.choice(train_idx, size=min(args.aasce, len(train_idx)), replace=False).tolist())
    hw = data["images"].shape[1:3]
    scale = np.array([hw[1], hw[0]])
    fb_masks = np.stack([rasterize_vertebrae((c / scale).reshape(-1, 2), *hw) for c in windows["corners"][use]])
    n = len(data["images"])
    merged = {
        "images": np.concatenate([data["images"], windows["images"][use]]),
        "corners": np.concatenate([data["corners"], windows["corners"][use]]),
        "masks": np.concatenate([data["masks"], fb_masks]),
        "cobb": np.concatenate([data["cobb"], windows["cobb"][use]]),
    }
    fb_idx = list(range(n, n + len(use))) * args.repeat
    args.run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "windows": [str(windows["names"][i]) for i in use],
        "held_out": [n for n in order if args.fold >= 0 and fold_of[n] == args.fold],
        "skipped": skipped,
        "aasce_train_films": len(aasce_train),
    }
    (args.run_dir / "fullbody_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    cfg = FitConfig(
        epochs=args.epochs, batch_size=8, learning_rate=args.lr, patience=args.epochs, lr_patience=args.epochs, seed=0
    )
    train_landmarks(merged, aasce_train + fb_idx, val_idx, args.run_dir, cfg, None, init_landmarks=args.init_landmarks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
