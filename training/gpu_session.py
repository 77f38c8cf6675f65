"""Every GPU training run of the committed models, in one process (one import of torch/Keras).

Run on a lent GPU machine with KERAS_BACKEND=torch (see training/gpu_train.sh); the weights it
writes (`.weights.h5`) are exported to ONNX afterwards on a machine with TensorFlow.
"""

from __future__ import annotations

import argparse
import time

from spine_core.structures import STRUCTURES, refinement_model_name
from training.cli import train_main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="runs")
    p.add_argument("--aasce-cache", default=".devdata/aasce.npz")
    p.add_argument("--course-cache", default=".devdata/course.npz")
    p.add_argument("--vertebra-budget", type=float, default=240)
    p.add_argument(
        "--vertebra-filters",
        type=int,
        default=16,
        help="first-stage Ap_Vertebra base filters, from scratch (24 or 32: the wider network the CPU runs could "
        "only reach by fine-tuning; 32 exports to about 31 MB, mind the 150 MB budget of exported_models/)",
    )
    p.add_argument("--demo-budget", type=float, default=8)
    p.add_argument(
        "--refine-cache",
        default=".devdata/aasce_refine.npz",
        help="spine-train cache aasce-refine ... (--jpeg-quality 95 to carry it: the raw file is 75 MB)",
    )
    p.add_argument("--refine-budget", type=float, default=300)
    p.add_argument("--refine-filters", type=int, default=16)
    p.add_argument("--landmark-cache", default=".devdata/landmarks.npz", help="spine-train cache aasce-landmarks ...")
    p.add_argument("--landmark-init", default="runs/ap_init.weights.h5", help="scripts/onnx_to_keras_weights.py output")
    p.add_argument("--landmark-budget", type=float, default=420)
    p.add_argument(
        "--stages",
        nargs="+",
        choices=["vertebra", "demos", "refine", "landmarks"],
        default=["vertebra", "demos"],
        help="refine: the second-stage Ap_Vertebra model, from scratch on whole windows",
    )
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    # Both Ap_Vertebra runs: from scratch, long patience, stopped by their time budgets.
    ap_vertebra = ["unet", "--structure", "Ap_Vertebra", "--epochs", "400", "--patience", "40"]
    if "refine" in args.stages:
        train_main(
            [
                *ap_vertebra,
                "--cache",
                args.refine_cache,
                "--run-dir",
                f"{args.runs}/{refinement_model_name('Ap_Vertebra')}",
                "--filters",
                str(args.refine_filters),
                "--batch-size",
                "8",
                "--time-budget",
                str(args.refine_budget),
            ]
        )
    if "landmarks" in args.stages:  # resumes a CPU run in the same folder, if one was carried
        train_main(
            [
                "landmarks",
                "--cache",
                args.landmark_cache,
                "--run-dir",
                f"{args.runs}/landmarks",
                "--init-weights",
                args.landmark_init,
                "--epochs",
                "400",
                "--patience",
                "40",
                "--time-budget",
                str(args.landmark_budget),
            ]
        )
    if "vertebra" in args.stages:
        train_main(
            [
                *ap_vertebra,
                "--cache",
                args.aasce_cache,
                "--run-dir",
                f"{args.runs}/Ap_Vertebra",
                "--filters",
                str(args.vertebra_filters),
                "--time-budget",
                str(args.vertebra_budget),
            ]
        )
    for structure in STRUCTURES if "demos" in args.stages else []:
        if structure == "Ap_Vertebra":
            continue
        common = [
            "unet",
            "--cache",
            args.course_cache,
            "--structure",
            structure,
            "--filters",
            "8",
            "--batch-size",
            "8",
            "--epochs",
            "300",
            "--patience",
            "60",
            "--time-budget",
            str(args.demo_budget),
        ]
        train_main([*common, "--holdout", "Damaged", "--run-dir", f"{args.runs}/demo/{structure}-holdout"])
        train_main([*common, "--run-dir", f"{args.runs}/demo/{structure}"])
    print(f"all runs done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
