"""`spine-train tilt` and `spine-train ends`: the models that read crops of the film around each vertebra."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from spine_core.vertebra_ends import ENDS_CROP_HW, ENDS_SPAN
from spine_core.vertebra_tilt import CROP_HW, CROP_SPAN
from training.splits import split_description


def device_description() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (keras {keras.__version__}, torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()} CPU (keras {keras.__version__}, {backend} backend)"


def _write_run_info(args: argparse.Namespace, state: dict, info: dict) -> None:
    """run_info.json beside the run's weights: what the export reads (crop, filters, figures, provenance)."""
    info = {
        **info,
        "split": split_description(),
        "trained_on": device_description(),
        "epochs": state["epoch"],
        "best_epoch": state["best"]["epoch"],
        "seed": args.seed,
        "training_time_s": round(sum(h["seconds"] for h in state["history"]), 1),
        "metrics": {k: v for k, v in state["best"].items() if k.startswith("val_")},
    }
    (Path(args.run_dir) / "run_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


def cmd_tilt(args: argparse.Namespace) -> None:
    from training.tilt import CropShape, train_tilt

    shape, filters = CropShape(tuple(args.crop_hw), args.crop_span), tuple(args.filters)
    state = train_tilt(
        Path(args.data), Path(args.run_dir), args.epochs, args.lr, args.batch_size, args.time_budget, args.seed, shape, filters
    )
    info = {
        "kind": "tilt",
        "training_data": "AASCE 2019 training set: each vertebra's crop from the original film, placed from the labels' "
        "corners with random first-reading errors (spine_core.vertebra_tilt)",
        "crop_hw": list(shape.hw),
        "crop_span": shape.span,
        "filters": list(filters),
    }
    _write_run_info(args, state, info)


def cmd_ends(args: argparse.Namespace) -> None:
    from training.ends import train_ends
    from training.tilt import CropShape

    shape, filters = CropShape(tuple(args.crop_hw), args.crop_span), tuple(args.filters)
    full_body, held_out, labels = None, [], None
    if args.full_body:
        from training.ends_full_body import LABELS, held_out_films, load_bodies

        labels = Path(args.full_body_labels) if args.full_body_labels else LABELS
        held_out = held_out_films(labels, args.folds, args.fold)
        full_body = load_bodies(Path(args.full_body), labels, skip=held_out)
    init = Path(args.init_from) / "best.weights.h5" if args.init_from else None
    state = train_ends(
        Path(args.data),
        Path(args.run_dir),
        args.epochs,
        args.lr,
        args.batch_size,
        args.time_budget,
        args.seed,
        filters,
        shape,
        full_body=full_body,
        init_weights=init,
    )
    info = {
        "kind": "ends",
        "training_data": "AASCE 2019 training set: crops of the vertebrae at and beyond the ends of T1..L5 (C6..T3, "
        "L3..S2, the labels' end vertebrae moved on by their step) and two from the middle, placed with random "
        "first-reading errors (spine_core.vertebra_ends)",
        "crop_hw": list(shape.hw),
        "crop_span": shape.span,
        "filters": list(filters),
    }
    if full_body is not None:
        info["training_data"] += (
            f"; and the chain bodies of {len(full_body.names)} marked full-body films ({args.full_body}, labels "
            f"{labels}, training.ends_full_body)"
        )
        info["full_body_films"] = full_body.names
        info["full_body_held_out"] = held_out
    if init is not None:
        info["initialised_from"] = str(init)
    _write_run_info(args, state, info)


def _common(p: argparse.ArgumentParser, crop_hw: tuple[int, int], crop_span: float) -> None:
    p.add_argument("data", help="AASCE-layout folder (images/, labels/)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--time-budget", type=float, default=0, help="seconds; stop after the epoch that would pass it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop-hw", type=int, nargs=2, default=list(crop_hw), metavar=("ROWS", "COLS"), help="the model's input")
    p.add_argument("--crop-span", type=float, default=crop_span, help="the crop's width in vertebra widths")
    p.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64, 96], help="per conv block (each halves the map)")


def add_crop_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tilt", help="train the tilt model (each vertebra's remaining tilt from a crop of the film)")
    _common(t, CROP_HW, CROP_SPAN)
    t.set_defaults(func=cmd_tilt)
    e = sub.add_parser("ends", help="train the ends model (which chain vertebrae are C7, T1, T2, L4, L5, S1)")
    _common(e, ENDS_CROP_HW, ENDS_SPAN)
    e.add_argument("--full-body", default=None, help="folder of the marked full-body films: their labelled bodies join")
    e.add_argument("--full-body-labels", default=None, help="default docs/fov/ends_labels.json (training.ends_full_body)")
    e.add_argument("--folds", type=int, default=0, help="deal the full-body films into this many folds by name ...")
    e.add_argument("--fold", type=int, default=-1, help="... and hold this one out (its films are not trained on)")
    e.add_argument("--init-from", default=None, help="a run folder whose best weights the run starts from (fine-tuning)")
    e.set_defaults(func=cmd_ends)
