"""`spine-train`: the training command line (`spine-export` is training/export_cli.py).

spine-train cache aasce DATA_DIR OUT.npz          preprocess a dataset once (CPU, no Keras needed)
spine-train cache course DATA_DIR OUT.npz
spine-train unet --cache aasce.npz --structure Ap_Vertebra --run-dir runs/Ap_Vertebra [...]
spine-train unet --cache course.npz --structure Lat_Vertebra --holdout Damaged --run-dir runs/Lat_Vertebra-holdout
spine-train unet --data $SPINE_ANNOTATIONS_DIR --structure Ap_Pedicle --run-dir runs/Ap_Pedicle   (course layout, patient split)
spine-train classifier --cache aasce.npz --run-dir runs/classifier [...]
spine-train landmarks --cache landmarks.npz --run-dir runs/landmarks [--init-landmarks W] [--level-head] [...]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from spine_core.preprocessing import REFINE_INPUT_HW, UNET_INPUT_HW
from spine_core.structures import STRUCTURES
from training.crop_cli import add_crop_commands, device_description
from training.splits import COBB_THRESHOLD_DEG, aasce_split, split_description

log = logging.getLogger("spine-train")


def _fit_config(args: argparse.Namespace):
    from training.train import FitConfig

    return FitConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        time_budget_s=args.time_budget,
        seed=args.seed,
    )


def cmd_cache(args: argparse.Namespace) -> None:
    from training.cache import build_aasce_cache, build_course_cache, build_refine_cache

    default_hw = REFINE_INPUT_HW if args.layout == "aasce-refine" else UNET_INPUT_HW
    hw = (args.height or default_hw[0], args.width or default_hw[1])
    if args.layout == "aasce-landmarks":
        from training.landmarks import build_landmark_cache

        print(build_landmark_cache(Path(args.data_dir), Path(args.out), hw, jpeg_quality=args.jpeg_quality))
    elif args.layout == "aasce-refine":
        print(
            build_refine_cache(Path(args.data_dir), Path(args.out), Path(args.stage1_models), hw, jpeg_quality=args.jpeg_quality)
        )
    elif args.layout == "aasce":
        print(build_aasce_cache(Path(args.data_dir), Path(args.out), hw, jpeg_quality=args.jpeg_quality))
    else:
        print(build_course_cache(Path(args.data_dir), Path(args.out), hw))


def cmd_unet(args: argparse.Namespace) -> None:
    from training.cache import load_aasce_cache, load_course_cache
    from training.train import train_unet

    cfg = _fit_config(args)
    heldout_studies, cache = None, args.cache
    if args.data:  # a course-layout folder (annotations, the course data set): training/annotated.py
        from training.annotated import structure_data

        hw = tuple(args.input_hw) if args.input_hw else UNET_INPUT_HW
        d = structure_data(Path(args.data), args.structure, Path(args.run_dir), args.repeat, hw)
        x_tr, y_tr, x_va, y_va = d.x_train, d.y_train, d.x_val, d.y_val
        training_data, split, heldout_studies, cache = d.description, d.split, d.heldout_studies, str(d.cache)
        validated, refines = False, None  # only the promotion rule (spine-export promote) validates a model
    elif args.structure == "Ap_Vertebra" and args.source == "aasce":
        data = load_aasce_cache(Path(args.cache))
        train_idx, val_idx = aasce_split(data)
        x_tr, y_tr = data["images"][train_idx], data["masks"][train_idx]
        x_va, y_va = data["images"][val_idx], data["masks"][val_idx]
        training_data = (
            f"AASCE 2019 training set ({len(data['images'])} AP radiographs), Ap_Vertebra masks filled from corner landmarks"
        )
        refines = "Ap_Vertebra" if "boxes" in data else None  # `cache aasce-refine`: windows around first-stage masks
        if refines:
            training_data += (
                f"; windows cut around the masks of the first-stage Ap_Vertebra model (sha256 {str(data['stage1_sha256'])[:12]}…)"
            )
        split = f"{split_description()}: {len(train_idx)} train / {len(val_idx)} val images"
        validated = True
    else:
        samples = [s for s in load_course_cache(Path(args.cache)) if args.structure in s["masks"]]
        if not samples:
            raise SystemExit(f"no study in {args.cache} has a {args.structure} mask")
        train = [s for s in samples if s["label"] != args.holdout]
        val = [s for s in samples if s["label"] == args.holdout] or train
        # One image per study: repeat it so an epoch holds `repeat` differently augmented copies.
        x_tr = np.repeat(np.stack([s["image"] for s in train]), args.repeat, axis=0)
        y_tr = np.repeat(np.stack([s["masks"][args.structure] for s in train]), args.repeat, axis=0)
        x_va = np.stack([s["image"] for s in val])
        y_va = np.stack([s["masks"][args.structure] for s in val])
        studies = ", ".join(sorted({s["study"] for s in train}))
        training_data = f"course-layout sample studies: {studies} only ({len(train)} image(s)), augmented; DEMONSTRATION ONLY"
        split = (
            f"train on {', '.join(s['study'] for s in train)}, score held-out {', '.join(s['study'] for s in val)}"
            if args.holdout
            else "trained on both studies; no held-out data (score is on training images)"
        )
        validated = False
        refines = None
    _, result = train_unet(
        x_tr,
        y_tr,
        x_va,
        y_va,
        Path(args.run_dir),
        cfg,
        filters=args.filters,
        num_layers=args.num_layers,
        loss=args.loss,
        resume=not args.no_resume,
        init_weights=args.init_weights,
        crop_hw=tuple(args.crop) if args.crop else None,
        bn_momentum=args.bn_momentum,
        freeze_batchnorm=args.freeze_bn,
    )
    info = {
        "kind": "refinement" if refines else "segmentation",
        "refines": refines,
        "structure": args.structure,
        "view": STRUCTURES[args.structure],
        "filters": args.filters,
        "num_layers": args.num_layers,
        "loss": args.loss,
        "training_data": training_data,
        "split": split,
        "validated": validated,
        "validation_set": (
            "held-out studies"
            if heldout_studies
            else "aasce-val"
            if validated
            else ("held-out study" if args.holdout else "training images")
        ),
        "heldout_studies": heldout_studies,
        "data_dir": str(Path(args.data).resolve()) if args.data else None,
        "cache": cache,
        "trained_on": device_description(),
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "training_time_s": round(result.seconds, 1),
        "stopped": result.stopped,
        "init_weights": args.init_weights,
        "input_hw": list(x_tr.shape[1:3]),
        "crop_hw": args.crop,
        "bn_momentum": args.bn_momentum,
        "freeze_bn": args.freeze_bn,
        "metrics": {
            "val_dice_mean": result.best_score,
            "val_dice_median": result.history[result.best_epoch - 1]["val_dice_median"],
        },
    }
    (Path(args.run_dir) / "run_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


def cmd_landmarks(args: argparse.Namespace) -> None:
    from training.landmarks import ENDS_LOSS_WEIGHT, load_landmark_cache, train_landmarks

    ends_loss_weight = ENDS_LOSS_WEIGHT if args.ends_loss_weight is None else args.ends_loss_weight

    data = load_landmark_cache(Path(args.cache))
    train_idx, val_idx = aasce_split(data)
    model, result = train_landmarks(
        data,
        train_idx,
        val_idx,
        Path(args.run_dir),
        _fit_config(args),
        args.init_weights,
        not args.no_resume,
        init_landmarks=args.init_landmarks,
        level_head=args.level_head,
        crop_height=args.crop_height or None,
        average_from=args.average_from,
        ends_loss_weight=ends_loss_weight,
    )
    best = result.history[result.best_epoch - 1]
    info = {
        "kind": "landmarks",
        "training_data": f"AASCE 2019 training set ({len(data['images'])} AP radiographs): the 68 corner landmarks of T1..L5",
        "split": f"{split_description()}: {len(train_idx)} train / {len(val_idx)} val images",
        "trained_on": device_description(),
        "init_weights": args.init_weights,
        "init_landmarks": args.init_landmarks,
        "ends_loss_weight": ends_loss_weight,
        "output_channels": int(model.output_shape[-1]),  # 11 with the ends head; runs from before it lack this key
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "training_time_s": round(result.seconds, 1),
        "stopped": result.stopped,
        "input_hw": list(data["images"].shape[1:3]),
        "metrics": {k: v for k, v in best.items() if k.startswith("val_") and k != "val_score"},
    }
    (Path(args.run_dir) / "run_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


def cmd_classifier(args: argparse.Namespace) -> None:
    from spine_core.preprocessing import mask_to_classifier_input
    from training.cache import load_aasce_cache
    from training.train import train_classifier

    cfg = _fit_config(args)
    data = load_aasce_cache(Path(args.cache))
    train_idx, val_idx = aasce_split(data)
    x = np.stack([mask_to_classifier_input(m) for m in data["masks"]])
    labels = data["cobb"].max(axis=1) >= args.cobb_threshold
    _, result = train_classifier(
        x[train_idx], labels[train_idx], x[val_idx], labels[val_idx], Path(args.run_dir), cfg, resume=not args.no_resume
    )
    best = result.history[result.best_epoch - 1]
    info = {
        "kind": "classification",
        "training_data": (
            "AASCE 2019 training set: ground-truth Ap_Vertebra masks; "
            f"label Damaged when the largest Cobb angle >= {args.cobb_threshold} deg"
        ),
        "split": f"{split_description()}: {len(train_idx)} train / {len(val_idx)} val",
        "cobb_threshold_deg": args.cobb_threshold,
        "validated": True,
        "trained_on": device_description(),
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "training_time_s": round(result.seconds, 1),
        "stopped": result.stopped,
        "metrics": {
            "val_auc_gt_masks": best["val_auc"],
            "val_accuracy_gt_masks": best["val_accuracy"],
            "val_damaged_fraction": float(labels[val_idx].mean()),
        },
    }
    (Path(args.run_dir) / "run_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


def _add_fit_args(p: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float, cache_required: bool = True) -> None:
    p.add_argument("--cache", required=cache_required, help="npz written by `spine-train cache`")
    p.add_argument("--run-dir", required=True, help="checkpoints, state (resumable), curves, run_info.json")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stop cleanly before exceeding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start afresh even if the run dir has a checkpoint")


def train_main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="spine-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache", help="preprocess a dataset into an npz")
    c.add_argument(
        "layout",
        choices=["aasce", "course", "aasce-refine", "aasce-landmarks"],
        help="aasce-refine: windows for the second-stage Ap_Vertebra model, cut around the first stage's masks",
    )
    c.add_argument("data_dir")
    c.add_argument("out")
    c.add_argument("--height", type=int, default=None, help="model input height (default: the layout's)")
    c.add_argument("--width", type=int, default=None)
    c.add_argument(
        "--stage1-models", default="exported_models", help="aasce-refine: models folder holding the first-stage Ap_Vertebra"
    )
    c.add_argument(
        "--jpeg-quality",
        type=int,
        default=None,
        help="aasce, aasce-refine: store images as JPEG (smaller, e.g. to carry to a GPU machine)",
    )
    c.set_defaults(func=cmd_cache)
    u = sub.add_parser("unet", help="train one structure's U-Net")
    _add_fit_args(u, epochs=150, batch_size=16, lr=1e-3, cache_required=False)
    u.add_argument("--structure", required=True, choices=sorted(STRUCTURES))
    u.add_argument(
        "--data",
        default=None,
        help="a course-layout folder (SPINE_ANNOTATIONS_DIR, the course data set) instead of --cache: patient-grouped split",
    )
    u.add_argument(
        "--input-hw", type=int, nargs=2, metavar=("H", "W"), default=None, help="--data: model frame (default 512 256)"
    )
    u.add_argument("--source", choices=["aasce", "course"], default="aasce", help="aasce only for Ap_Vertebra")
    u.add_argument("--holdout", choices=["Normal", "Damaged"], default=None, help="course: study label scored, not trained on")
    u.add_argument("--repeat", type=int, default=32, help="course: augmented copies of each study per epoch")
    u.add_argument("--filters", type=int, default=16)
    u.add_argument("--num-layers", type=int, default=4)
    u.add_argument("--loss", choices=["bce", "dice_bce"], default="dice_bce")
    u.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None, help="train on HxW crops (multiples of 16)")
    u.add_argument("--bn-momentum", type=float, default=0.99, help="BatchNorm momentum while training (0.9 for short runs)")
    u.add_argument(
        "--freeze-bn",
        action="store_true",
        help="BatchNorm layers fixed in inference mode (fine-tuning weights read back from an ONNX export)",
    )
    u.add_argument(
        "--init-weights",
        default=None,
        help="start from these weights (e.g. a lower-resolution run; the U-Net is fully convolutional)",
    )
    u.set_defaults(func=cmd_unet)
    m = sub.add_parser("landmarks", help="train the landmark model (centre heatmap + corner offsets) on AASCE corners")
    _add_fit_args(m, epochs=200, batch_size=8, lr=3e-4)
    m.add_argument("--init-weights", default=None, help="Ap_Vertebra U-Net weights (scripts/onnx_to_keras_weights.py)")
    m.add_argument(
        "--init-landmarks",
        default=None,
        help="weights of a landmark model trained before the ends head (its best.weights.h5): the new head is added to it",
    )
    m.add_argument("--ends-loss-weight", type=float, default=None, help="the C7/S1 head's loss weight (default 0.5)")
    m.add_argument(
        "--average-from", type=int, default=0, help="write mean.weights.h5, the mean of every epoch's weights from this one on"
    )
    m.add_argument("--level-head", action="store_true", help="add the level head (channel 12: which vertebra each centre is)")
    m.add_argument(
        "--crop-height",
        type=int,
        default=256,
        help="train on windows this tall (half a frame halves a CPU step); 0: whole frames",
    )
    m.add_argument("--resume", action="store_true", help="continue the run in --run-dir (the default; kept for scripts)")
    m.set_defaults(func=cmd_landmarks)
    add_crop_commands(sub)
    k = sub.add_parser("classifier", help="train the ResNet50 mask classifier on AASCE masks")
    _add_fit_args(k, epochs=60, batch_size=32, lr=3e-4)
    k.add_argument("--cobb-threshold", type=float, default=COBB_THRESHOLD_DEG)
    k.set_defaults(func=cmd_classifier)
    args = parser.parse_args(argv)
    if args.command == "unet" and not (args.cache or args.data):
        parser.error("unet needs --cache or --data")
    if getattr(args, "source", None) == "aasce" and args.structure != "Ap_Vertebra":
        args.source = "course"
    args.func(args)


if __name__ == "__main__":
    train_main()
