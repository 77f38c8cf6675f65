"""Where the angles' error comes from, and what the tilt model changes: the served vertebrae against the labels.

    python scripts/tilt_analysis.py ../shared/data/aasce-train [--models exported_models] [--json out.json]

On the validation films (the patient-grouped split), each film goes through the service's own landmark reading
(`spine_engine.measurement.landmark_reading`, the tilt model off), then the tilt model's second look
(`second_look`) when the manifest has one. Printed, for the landmark model's corners as read and as turned:

- the SMAPE over the 90 films, the largest angle's MAE, and the tilt error against the labels (degrees: mean,
  median, 90th percentile, over every vertebra);
- for the corners as read, the SMAPE when each vertebra keeps its centre and level but takes the labels' tilt
  (`tilt from labels`), or half of its tilt error (`half the tilt error`): what better tilts alone could give;
- the share of the turned SMAPE carried by films whose T1 or L5 is on another vertebra, and by films read as
  the other curve type (S / C) than their labels;
- how rough the tilts are along the spine (`roughness`: the spread of each tilt less the mean of its two
  neighbours', for the labels and for the final reading on the films whose ends are right), and the SMAPE the
  labels' own corners score against their angles when each vertebra is turned by Gaussian noise of a few
  degrees (`labels_with_tilt_noise`, 10 draws each): what a reader as exact as the labels' scatter would score.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(REPO))

from spine_core.cobb import cobb_angles  # noqa: E402
from spine_core.landmark_metrics import level_offsets, smape_pct  # noqa: E402
from spine_core.vertebra_tilt import cobb_vectors, turn_vertebrae  # noqa: E402
from spine_engine.decoding import decode_image  # noqa: E402
from spine_engine.measurement import landmark_reading, second_look  # noqa: E402
from spine_engine.registry import ModelRegistry  # noqa: E402
from spine_engine.settings import EngineSettings  # noqa: E402
from training.datasets import read_aasce_dataset  # noqa: E402
from training.splits import aasce_sample_split  # noqa: E402


def angles(corners: np.ndarray, height: int) -> np.ndarray:
    return np.asarray(cobb_angles(corners, height).aasce_angles_deg)


def summary(rows: list[dict], key: str) -> dict:
    smape = np.array([r[f"{key}_smape"] for r in rows])
    tilt = np.concatenate([r[f"{key}_tilt_error"] for r in rows])
    return {
        "smape_pct": float(smape.mean()),
        "max_angle_mae_deg": float(np.mean([r[f"{key}_max_error"] for r in rows])),
        "tilt_error_mean_deg": float(tilt.mean()),
        "tilt_error_median_deg": float(np.median(tilt)),
        "tilt_error_p90_deg": float(np.percentile(tilt, 90)),
    }


def roughness_deg(tilts: list[np.ndarray]) -> dict[str, float]:
    """Spread of each inner vertebra's tilt less the mean of its neighbours' (independent noise of std s adds
    1.5 s^2 to its variance; the spine's own bends add the rest): std and a robust std (1.4826 MAD)."""
    residual = np.concatenate([np.degrees(t[1:-1] - (t[:-2] + t[2:]) / 2) for t in tilts])
    mad = np.median(np.abs(residual - np.median(residual)))
    return {"std": float(residual.std()), "robust_std": float(1.4826 * mad)}


def noise_floor(films: list[tuple[np.ndarray, int, np.ndarray]], sigmas: tuple[float, ...], draws: int = 10) -> dict:
    """SMAPE of the labels' corners, each vertebra turned by N(0, sigma) degrees, against the labels' angles."""
    rng = np.random.default_rng(0)
    labelled = np.array([a for _, _, a in films])
    out = {}
    for sigma in sigmas:
        scores = []
        for _ in range(draws):
            noisy = [angles(turn_vertebrae(c, np.radians(rng.normal(0, sigma, 17))), h) for c, h, _ in films]
            scores.append(smape_pct(np.array(noisy), labelled))
        out[f"{sigma:g}"] = {"smape_pct": float(np.mean(scores)), "spread": float(np.std(scores))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--models", default=str(REPO / "exported_models"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    samples = read_aasce_dataset(Path(args.data))
    _, val_idx = aasce_sample_split(samples)
    registry = ModelRegistry.load(Path(args.models), providers=["CPUExecutionProvider"], warmup=False)
    policy = replace(EngineSettings().policy(), tilt_model=False)
    tilt = registry.tilt_model()
    rows, films, label_tilts, read_tilts = [], [], [], []
    for i in val_idx:
        sample = samples[i]
        pixels = decode_image(sample.image_path.read_bytes(), 10**9, sample.name).pixels
        h, w = pixels.shape[:2]
        truth, labelled = sample.corners(h, w), sample.cobb_angles
        reading = landmark_reading(registry, pixels, policy)
        read = reading.vertebrae.corners()
        true_tilt = cobb_vectors(truth)[0]
        error = cobb_vectors(read)[0] - true_tilt
        variants = {
            "read": read,
            "tilt_from_labels": turn_vertebrae(read, -error),
            "half_the_tilt_error": turn_vertebrae(read, -error / 2),
        }
        if tilt is not None:
            variants["turned"] = second_look(registry, tilt, pixels, reading.vertebrae)[0].corners()
        row: dict = {"image": sample.name}
        for key, corners in variants.items():
            predicted = angles(corners, h)
            row[f"{key}_smape"] = smape_pct(predicted[None], labelled[None])
            row[f"{key}_max_error"] = abs(predicted.max() - labelled.max())
            row[f"{key}_tilt_error"] = np.abs(np.degrees(cobb_vectors(corners)[0] - true_tilt))
        offsets = level_offsets(read, truth)
        row["levels_off"] = bool(offsets[0] != 0 or offsets[-1] != 0)
        final = variants.get("turned", read)
        films.append((truth, h, labelled))
        label_tilts.append(true_tilt)
        if not row["levels_off"]:
            read_tilts.append(cobb_vectors(final)[0])
        row["curve_type_differs"] = cobb_angles(final, h).curve != cobb_angles(truth, h).curve
        rows.append(row)
    keys = [k for k in ("read", "tilt_from_labels", "half_the_tilt_error", "turned") if f"{k}_smape" in rows[0]]
    out: dict = {key: summary(rows, key) for key in keys}
    final_key = "turned" if tilt is not None else "read"
    total = sum(r[f"{final_key}_smape"] for r in rows)
    for flag in ("levels_off", "curve_type_differs"):
        flagged = [r for r in rows if r[flag]]
        out[f"films_{flag}"] = len(flagged)
        out[f"smape_share_of_films_{flag}"] = float(sum(r[f"{final_key}_smape"] for r in flagged) / total) if total else 0.0
    out["films"] = len(rows)
    right_ends = [r[f"{final_key}_tilt_error"] for r in rows if not r["levels_off"]]
    errors = np.concatenate(right_ends)
    out[f"{final_key}_tilt_error_films_with_both_ends_right"] = {
        "films": len(right_ends),
        "mean_deg": float(errors.mean()),
        "median_deg": float(np.median(errors)),
    }
    out["roughness_deg"] = {
        "labels": roughness_deg(label_tilts),
        f"{final_key}, films with both ends right": roughness_deg(read_tilts),
    }
    out["labels_with_tilt_noise"] = noise_floor(films, (0.0, 0.5, 1.0, 1.5, 2.0, 2.5))
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
