"""`spine-export`: trained weights to ONNX with parity, into the manifest; figures, int8 variants, promotion.

spine-export unet|classifier --run-dir RUN --cache aasce.npz --models exported_models [...]
spine-export landmarks --run-dir RUN --cache landmarks.npz --models exported_models [--compare-eval EVAL.json]
spine-export annotate --models exported_models --model Ap_Vertebra --eval-json eval.json --prefix served_
spine-export quantize --model Ap_Vertebra --layout aasce --data DATA_DIR
spine-export promote --models exported_models --model Ap_Pedicle --eval-json heldout.json   (the promotion rule)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

EXPORT_HELP = """Export trained Keras weights to ONNX (tf2onnx), check parity on real inputs, record them in the manifest.

An export whose probabilities differ from the Keras model's by more than 1e-4 is refused and nothing is
written to the manifest. `annotate` merges figures into a model's manifest metrics; `quantize` adds an int8
variant calibrated on real images.
"""


def export_main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from spine_core.manifest import load_manifest
    from training.export import annotate, export_classifier, export_unet, flatten

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="spine-export", description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    u = sub.add_parser("unet", help="export one U-Net run")
    u.add_argument("--run-dir", required=True)
    u.add_argument("--holdout-run", default=None, help="demo models: the held-out run whose score to record")
    u.add_argument("--recalibrate-bn", type=int, default=0, help="course-trained models: BatchNorm re-estimation passes")
    u.add_argument(
        "--combine",
        choices=["replace", "mean"],
        default="replace",
        help="refinement runs: serve this model's window probabilities, or their mean with the first stage's",
    )
    lm = sub.add_parser("landmarks", help="export the landmark model (validated by its measured figures)")
    lm.add_argument("--run-dir", required=True)
    lm.add_argument(
        "--compare-eval", default=None, help="spine-evaluate JSON of the measurement it replaces (--measurement mask)"
    )
    for kind, setting in (("tilt", "SPINE_TILT_MODEL"), ("ends", "SPINE_ENDS_MODEL")):
        crop = sub.add_parser(kind, help=f"export the {kind} model (validated by the service's figures with and without it)")
        crop.add_argument("--run-dir", required=True, nargs="+", help="one run, or several of the same crop (their mean)")
        crop.add_argument("--data", required=True, help="the AASCE folder it was trained on (parity crops from validation films)")
        crop.add_argument("--models", default="exported_models")
        crop.add_argument("--no-triton-config", action="store_true")
        crop.add_argument(
            "--eval-json", default=None, help=f"spine-evaluate aasce --subset val JSON with the {kind} model served"
        )
        crop.add_argument("--compare-eval", default=None, help=f"the same without it ({setting}=false)")
    sm = sub.add_parser("serve-mask", help="serve the corner-filled Ap_Vertebra mask if its validation Dice beats the U-Net's")
    sm.add_argument("--models", default="exported_models")
    sm.add_argument("--eval-json", required=True, help="spine-evaluate aasce --subset val JSON (U-Net mask served)")
    k = sub.add_parser("classifier", help="export the ResNet50 mask classifier")
    k.add_argument("--run-dir", required=True)
    for p in (u, k, lm):
        p.add_argument("--cache", required=p is not u, help="npz the run was trained on (parity inputs; unet: default the run's)")
        p.add_argument("--models", default="exported_models")
        p.add_argument("--no-triton-config", action="store_true")
    a = sub.add_parser("annotate", help="merge figures from a JSON file into a model's manifest metrics")
    a.add_argument("--models", default="exported_models")
    a.add_argument("--model", required=True)
    a.add_argument("--eval-json", required=True)
    a.add_argument("--keys", nargs="+", required=True, help="dotted keys of the JSON to copy, KEY or KEY=NAME")
    a.add_argument("--prefix", default="")
    a.add_argument("--variant", default=None, help="write into variants[VARIANT].metrics (e.g. int8)")
    q = sub.add_parser("quantize", help="add an int8 variant of an exported model (calibrated on real images)")
    q.add_argument("--models", default="exported_models")
    q.add_argument("--model", required=True)
    q.add_argument("--layout", choices=["aasce", "course"], required=True)
    q.add_argument("--data", required=True, help="dataset the calibration images come from")
    q.add_argument("--calibration-images", type=int, default=32, help="aasce: images drawn from the training split")
    q.add_argument("--check-images", type=int, default=None, help="aasce: first N validation images (default all)")
    q.add_argument("--holdout-study", default=None, help="course: study kept out of calibration, used for the check")
    r = sub.add_parser("promote", help="apply the promotion rule (training/promotion.py) to held-out figures: validated or not")
    r.add_argument("--models", default="exported_models")
    r.add_argument("--model", required=True)
    r.add_argument("--eval-json", required=True, help="written by spine-evaluate course ... --heldout-of RUN_DIR --json")
    args = parser.parse_args(argv)
    models_dir = Path(args.models)
    if args.command == "promote":
        from dataclasses import asdict

        from training.promotion import promote

        print(json.dumps(asdict(promote(models_dir, args.model, Path(args.eval_json))), indent=1))
        return
    if args.command == "annotate":
        flat = flatten(json.loads(Path(args.eval_json).read_text()))
        pairs = [k.split("=", 1) if "=" in k else (k, k) for k in args.keys]
        annotate(models_dir, args.model, {name: flat[key] for key, name in pairs}, args.prefix, args.variant)
        return
    if args.command == "serve-mask":
        from training.landmarks_export import choose_served_mask

        print(json.dumps({"serves_mask": choose_served_mask(models_dir, json.loads(Path(args.eval_json).read_text()))}))
        return
    if args.command == "quantize":
        from training.quantize import aasce_inputs, add_int8_variant, course_inputs

        entry = load_manifest(models_dir).by_name()[args.model]
        if args.layout == "aasce":
            calibration, check, what = aasce_inputs(Path(args.data), entry, args.calibration_images, args.check_images)
        else:
            calibration, check, what = course_inputs(Path(args.data), entry, args.holdout_study)
        print(add_int8_variant(models_dir, args.model, calibration, check, what).model_dump_json(indent=1))
        return
    models_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "unet":
        holdout = Path(args.holdout_run) if args.holdout_run else None
        cache = args.cache or json.loads((Path(args.run_dir) / "run_info.json").read_text()).get("cache")
        if not cache:
            parser.error("unet: --cache (this run does not name the data it was trained on)")
        entry = export_unet(Path(args.run_dir), Path(cache), models_dir, holdout, args.recalibrate_bn, args.combine)
    elif args.command == "landmarks":
        from training.landmarks_export import export_landmarks

        compare = json.loads(Path(args.compare_eval).read_text()) if args.compare_eval else None
        entry = export_landmarks(Path(args.run_dir), Path(args.cache), models_dir, compare)
    elif args.command in ("tilt", "ends"):
        from training.ends_export import export_ends
        from training.tilt_export import export_tilt

        export_crop_model = export_tilt if args.command == "tilt" else export_ends
        evals = [json.loads(Path(p).read_text()) if p else None for p in (args.eval_json, args.compare_eval)]
        entry = export_crop_model([Path(d) for d in args.run_dir], Path(args.data), models_dir, *evals)
    else:
        entry = export_classifier(Path(args.run_dir), Path(args.cache), models_dir)
    if not args.no_triton_config:
        from spine_core.triton import write_triton_configs

        write_triton_configs(models_dir)
    print(entry.model_dump_json(indent=1))


if __name__ == "__main__":
    export_main()
