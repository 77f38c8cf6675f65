"""Cobb angles and vertebra corners read off the service's own Ap_Vertebra masks, against the AASCE labels.

.venv/bin/python -m scripts.measure_cobb ../shared/data/aasce-train --subset val --json out.json \
    [--models exported_models] [--refine] [--plot docs/cobb_max_angle.png] [--limit N]
    [--source unet|label-masks|labels] [--noise-px SD]

--source label-masks runs the same post-processing on masks filled from the labels' corners (what it
can reach with a perfect segmentation); --source labels takes the labels' corners as they are (checks
the Cobb computation against angles.csv; no model runs for either).

Per film: segment with `ModelRegistry.segment(image, "AP", ["Ap_Vertebra"])` (the mask at the original
size), `spine_core.vertebrae.find_vertebrae`, then `spine_core.cobb.cobb_angles` when all 17 were found.
Reports (JSON and stdout):
  cobb.smape_pct, cobb.mae_deg (per angle, in angles.csv's order), cobb.max_angle_mae_deg — over the
    films that got an angle, and apart for those `cobb_angles` marks reliable and flagged; the share of
    films whose severity band (and whether >= 40°) matches; films_without_angle with their reasons;
  landmarks.mean_error_px — mean distance over the 68 corners (original pixels), films with an angle;
  levels.correct_films — films whose every vertebra's level is the ground-truth vertebra nearest to it;
  dice.corners / dice.unet — Dice of the masks filled from the predicted corners and of the U-Net's
    mask, both against the mask filled from the ground-truth corners (all films);
  confidence.spearman_vs_corner_error — does a lower confidence mean a worse vertebra?
and draws predicted vs true max angle to --plot.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from spine_core.cobb import LEVELS, N_VERTEBRAE, cobb_angles, severity
from spine_core.landmark_metrics import corner_error_px, dice, fill_vertebrae, mae_deg, smape_pct
from spine_core.vertebrae import Vertebra, VertebraeResult, find_vertebrae
from spine_engine import ModelRegistry, Segmenter
from training.datasets import read_aasce_dataset

try:  # the split may move to training.splits
    from training.splits import aasce_sample_split  # type: ignore[import-not-found]
except ImportError:
    from training.cli import aasce_sample_split


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(np.asarray(a)), _ranks(np.asarray(b)))[0, 1]) if len(a) > 2 else float("nan")


def measure_film(
    registry: ModelRegistry | None,
    image_path: Path,
    landmarks: np.ndarray,
    angles: np.ndarray,
    source: str = "unet",
    noise: np.ndarray | None = None,
) -> dict:
    """One film's record. `source`: "unet" (the served mask), "label-masks" (the mask filled from the
    labels' corners: the post-processing's own ceiling) or "labels" (the labels' corners themselves,
    plus `noise` in pixels when given: how sensitive the angles are to corner error)."""
    if source == "unet":
        image = np.asarray(Image.open(image_path).convert("L"))
        height, width = image.shape
    else:
        width, height = Image.open(image_path).size  # header only
    truth = (landmarks * [width, height]).reshape(N_VERTEBRAE, 4, 2)
    truth_mask = fill_vertebrae(truth, height, width)
    unet_mask = Segmenter(registry).segment(image, "AP", ["Ap_Vertebra"]).masks["Ap_Vertebra"] if source == "unet" else truth_mask
    started = time.perf_counter()
    if source == "labels":
        noisy = truth if noise is None else truth + noise
        found = VertebraeResult([Vertebra(level, c, 1.0, 0) for level, c in zip(LEVELS, noisy, strict=True)])
    else:
        found = find_vertebrae(unet_mask)
    corners = found.corners()
    cobb = cobb_angles(corners, height, found.confidences()) if corners is not None else None
    postprocess_ms = (time.perf_counter() - started) * 1000

    found_corners = np.array([v.corners for v in found.vertebrae]).reshape(-1, 4, 2)
    truth_centres = truth.mean(axis=1)
    nearest = [int(np.argmin(np.linalg.norm(truth_centres - v.corners.mean(axis=0), axis=1))) for v in found.vertebrae]
    assigned = [N_VERTEBRAE - len(found.vertebrae) + k for k in range(len(found.vertebrae))]
    film = {
        "name": image_path.name,
        "size": [width, height],
        "found": len(found.vertebrae),
        "reason": found.reason,
        "notes": found.notes,
        "levels_correct": nearest == assigned and len(nearest) == N_VERTEBRAE,
        # which end anchors the levels right: counted from L5 upwards (served) or from T1 downwards
        "levels_right_from_bottom": nearest == assigned,
        "levels_right_from_top": nearest == list(range(len(nearest))),
        "true_angles": angles.tolist(),
        "predicted_angles": cobb.aasce_angles_deg if cobb else None,
        "curve": cobb.curve if cobb else None,
        "reliable": cobb.reliable if cobb else None,
        "corner_error_px": corner_error_px(corners, truth) if corners is not None else None,
        "dice_corners": dice(fill_vertebrae(found_corners, height, width), truth_mask),
        "dice_unet": dice(unet_mask, truth_mask),
        "postprocess_ms": postprocess_ms,
        # per vertebra: (confidence, distance of its corners to the ground truth's same level)
        "vertebra_confidence_error": [
            (v.confidence, corner_error_px(v.corners, truth[assigned[k]])) for k, v in enumerate(found.vertebrae)
        ],
    }
    return film


def _angle_metrics(films: list[dict]) -> dict:
    predicted = np.array([f["predicted_angles"] for f in films])
    true = np.array([f["true_angles"] for f in films])
    return {
        "smape_pct": smape_pct(predicted, true),
        "mae_deg": mae_deg(predicted, true),
        "max_angle_mae_deg": float(np.abs(predicted[:, 0] - true[:, 0]).mean()),
    }


def summarise(films: list[dict]) -> dict:
    measured = [f for f in films if f["predicted_angles"] is not None]
    summary: dict = {"films": len(films), "films_with_angle": len(measured), "films_without_angle": len(films) - len(measured)}
    summary["without_angle"] = [{"name": f["name"], "reason": f["reason"]} for f in films if f["predicted_angles"] is None]
    if measured:
        summary["cobb"] = _angle_metrics(measured)
        summary["cobb"]["angle_order"] = "as angles.csv: largest, then the organisers' second and third"
        true_max = np.array([f["true_angles"][0] for f in measured])
        predicted_max = np.array([f["predicted_angles"][0] for f in measured])
        summary["cobb"]["severity_agreement"] = float(
            np.mean([severity(p) == severity(t) for p, t in zip(predicted_max, true_max, strict=True)])
        )
        summary["cobb"]["severe_40_agreement"] = float(np.mean((predicted_max >= 40) == (true_max >= 40)))
        for flag, name in ((True, "reliable"), (False, "flagged_unreliable")):
            subset = [f for f in measured if f["reliable"] is flag]
            summary["cobb"][name] = {"films": len(subset), **(_angle_metrics(subset) if subset else {})}
        summary["landmarks"] = {"mean_error_px": float(np.mean([f["corner_error_px"] for f in measured]))}
    incomplete = [f for f in films if f["found"] != N_VERTEBRAE]
    summary["levels"] = {
        "correct_films": sum(f["levels_correct"] for f in films),
        "complete_films": len(films) - len(incomplete),
        "complete_but_shifted": sum(f["found"] == N_VERTEBRAE and not f["levels_correct"] for f in films),
        "incomplete_films": len(incomplete),
        "incomplete_right_from_bottom": sum(f["levels_right_from_bottom"] for f in incomplete),
        "incomplete_right_from_top": sum(f["levels_right_from_top"] for f in incomplete),
    }
    summary["dice"] = {
        "corners": float(np.mean([f["dice_corners"] for f in films])),
        "unet": float(np.mean([f["dice_unet"] for f in films])),
    }
    pairs = np.array([p for f in films if f["levels_correct"] for p in f["vertebra_confidence_error"]]).reshape(-1, 2)
    summary["confidence"] = {
        "spearman_vs_corner_error": spearman(pairs[:, 0], pairs[:, 1]) if len(pairs) else None,
        "vertebrae": len(pairs),
        "note": "over the vertebrae of films whose levels are all right; negative = lower confidence, larger error",
    }
    summary["postprocess_ms_mean"] = float(np.mean([f["postprocess_ms"] for f in films]))
    return summary


def plot_max_angle(films: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [f for f in films if f["predicted_angles"] is not None]
    true = np.array([f["true_angles"][0] for f in measured])
    predicted = np.array([f["predicted_angles"][0] for f in measured])
    flagged = np.array([f["reliable"] is False for f in measured], dtype=bool)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(true[~flagged], predicted[~flagged], s=14, alpha=0.8, label=f"reliable ({(~flagged).sum()})")
    ax.scatter(true[flagged], predicted[flagged], s=18, marker="x", color="tab:red", label=f"flagged ({flagged.sum()})")
    ax.legend(loc="upper left", fontsize=8)
    top = max(true.max(initial=0), predicted.max(initial=0)) * 1.05 + 1
    ax.plot([0, top], [0, top], color="grey", lw=1)
    for line in (10, 25, 40):
        ax.axvline(line, color="lightgrey", lw=0.6, ls="--")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="true max Cobb angle (°)", ylabel="predicted max Cobb angle (°)")
    mae = float(np.abs(predicted - true).mean()) if len(true) else float("nan")
    ax.set_title(f"{title}\n{len(measured)} films with an angle, MAE {mae:.1f}°", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def summarise_served(films: list[dict]) -> dict:
    measured = [f for f in films if f["predicted_angles"] is not None]
    errors = np.array([abs(f["predicted_angles"][0] - max(f["true_angles"])) for f in measured])
    return {"films": len(films), "with_angle": len(measured), "max_angle_mae_deg": float(errors.mean()) if len(errors) else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="AASCE-layout folder (images/, labels/), or with --from-eval its JSON")
    parser.add_argument(
        "--from-eval", action="store_true", help="data_dir is a `spine-evaluate aasce --json` file: plot what /classify served"
    )
    parser.add_argument("--subset", choices=("val", "train", "all"), default="val")
    parser.add_argument("--models", type=Path, default=Path("exported_models"))
    parser.add_argument("--refine", action="store_true", help="serve Ap_Vertebra from its refinement model")
    parser.add_argument(
        "--source",
        choices=("unet", "label-masks", "labels"),
        default="unet",
        help="corners from the U-Net's mask (default), from the mask filled from the labels' corners "
        "(the post-processing's ceiling), or the labels' corners (checks the Cobb computation)",
    )
    parser.add_argument("--json", type=Path, help="write the summary and per-film records here")
    parser.add_argument("--plot", default="docs/cobb_max_angle.png", help="PNG path; '' for none")
    parser.add_argument("--limit", type=int, help="only the first N films of the subset")
    parser.add_argument("--noise-px", type=float, default=0.0, help="--source labels: Gaussian noise (sd, px) on each corner")
    args = parser.parse_args()
    if args.from_eval:  # the films as spine-evaluate scored them through the served path
        result = json.loads(args.data_dir.read_text())
        films = [{**row, "true_angles": row["true_angles"]} for row in result["per_image"]]
        plot_max_angle(films, Path(args.plot), f"POST /classify, AASCE {result['subset']} split")
        print(json.dumps(summarise_served(films), indent=1))
        return
    rng = np.random.default_rng(0)

    samples = read_aasce_dataset(args.data_dir)
    train, val = aasce_sample_split(samples)
    chosen = {"val": val, "train": train, "all": list(range(len(samples)))}[args.subset][: args.limit]
    registry = ModelRegistry.load(args.models, providers=["CPUExecutionProvider"], warmup=False, use_refinement=args.refine)
    films = []
    for k, i in enumerate(chosen):
        s = samples[i]
        noise = rng.normal(0.0, args.noise_px, (N_VERTEBRAE, 4, 2)) if args.noise_px else None
        films.append(measure_film(registry, s.image_path, s.landmarks, s.cobb_angles, args.source, noise))
        f = films[-1]
        print(f"{k + 1}/{len(chosen)} {f['name']}: found {f['found']}, angles {f['predicted_angles']} vs {f['true_angles']}")
    summary = summarise(films)
    summary["subset"] = args.subset
    summary["refine"] = args.refine
    summary["source"] = args.source
    summary["noise_px"] = args.noise_px
    print(json.dumps({k: v for k, v in summary.items() if k != "without_angle"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "films": films}, indent=1))
    if args.plot:
        what = {"unet": "the Ap_Vertebra mask" + (" (refined)" if args.refine else ""), "label-masks": "label-filled masks"}
        plot_max_angle(films, Path(args.plot), f"AASCE {args.subset} split, corners from {what.get(args.source, 'the labels')}")


if __name__ == "__main__":
    main()
