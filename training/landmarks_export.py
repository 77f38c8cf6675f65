"""Export the landmark model (ONNX, parity-checked) into the manifest; `validated` decided by its measured figures.

The rule (`is_validated`): on the patient-grouped AASCE validation split, the model answers every film, and its
SMAPE over all films (a film without angles counting 100 %) is at most `MAX_VALIDATED_SMAPE` — the upper end of
the published range on this dataset (8-10 %) — or, given the `spine-evaluate` figures of the measurement it
replaces (`--compare-eval`, the mask geometry measured the same way), lower than that one's: a measured
improvement on what is served today.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spine_core.landmarks import ENDS_CHANNEL, LEVEL_CHANNEL, decode
from spine_core.manifest import ModelEntry, sha256_file, upsert_model
from spine_core.preprocessing import preprocessing_spec
from spine_core.structures import LANDMARK_MODEL_NAME
from training.export import OPSET, _export_and_check, _now
from training.landmarks import LANDMARK_OUTPUT_NAME, build_landmark_model, load_landmark_cache, predict
from training.models import UNET_INPUT_NAME
from training.splits import aasce_split

MAX_VALIDATED_SMAPE = 10.0


def is_validated(metrics: dict, replaced_smape: float | None = None) -> bool:
    smape = metrics.get("val_smape")
    if smape is None or metrics.get("val_answered") != 1.0:
        return False
    return smape <= MAX_VALIDATED_SMAPE or (replaced_smape is not None and smape < replaced_smape)


def median_peak(model, data: dict, val_idx: list[int]) -> float:
    """The median heatmap peak of the vertebrae the model sees on the validation films: what confidence 1 means."""
    heads = predict(model, (data["images"][val_idx].astype(np.float32) / 255.0)[..., np.newaxis])
    peaks = [s for out in heads if (found := decode(out)) is not None for s in found.confidence[found.detected]]
    return float(np.median(peaks)) if peaks else 1.0


def _origin(info: dict) -> str:
    """Where the weights came from: a run's start and best epoch, or the checkpoints a soup averaged."""
    start = info.get("init_landmarks") or info.get("init_weights") or "random weights"
    if info.get("soup_of"):
        return (
            f"The mean of {len(info['soup_of'])} checkpoints ({', '.join(info['soup_of'])}; scripts/landmark_soup.py) "
            f"of fine-tuning runs from {start} on {info.get('trained_on')}"
        )
    return f"Initialised from {start}; best epoch {info['best_epoch']}"


def export_landmarks(run_dir: Path, cache_path: Path, models_dir: Path, compare_eval: dict | None = None) -> ModelEntry:
    info = json.loads((run_dir / "run_info.json").read_text())
    input_hw = tuple(info["input_hw"])
    # A run from before the ends head says nothing of its channels: it has 10 (heatmap, offsets, mask).
    channels = info.get("output_channels", ENDS_CHANNEL)
    heads = {"ends_head": channels > ENDS_CHANNEL, "level_head": channels > LEVEL_CHANNEL}
    model = build_landmark_model(input_hw, **heads)
    model.load_weights(run_dir / "best.weights.h5")
    data = load_landmark_cache(cache_path)
    _, val_idx = aasce_split(data)
    parity_inputs = (data["images"][val_idx[:4]].astype(np.float32) / 255.0)[..., np.newaxis]
    onnx_path, diff = _export_and_check(
        model, models_dir, LANDMARK_MODEL_NAME, parity_inputs, UNET_INPUT_NAME, LANDMARK_OUTPUT_NAME
    )
    metrics = {f"model_frame_{k}": v for k, v in info["metrics"].items()}
    metrics["val_median_peak"] = median_peak(model, data, val_idx)
    replaced = compare_eval["cobb"]["smape_all_films_pct"] if compare_eval else None
    if replaced is not None:
        metrics["val_smape_all_films_of_replaced_measurement"] = replaced
    validated = is_validated(info["metrics"], replaced)
    entry = ModelEntry(
        name=LANDMARK_MODEL_NAME,
        kind="landmarks",
        structure="Ap_Vertebra",
        view="AP",
        file=str(onnx_path.relative_to(models_dir)),
        sha256=sha256_file(onnx_path),
        input_name=UNET_INPUT_NAME,
        output_name=LANDMARK_OUTPUT_NAME,
        input_shape=[None, *input_hw, 1],
        output_shape=[None, *input_hw, int(model.output_shape[-1])],
        preprocessing={**preprocessing_spec(), "unet_input_hw": list(input_hw)},
        architecture="U-Net (the Ap_Vertebra design) + vertebra-centre heatmap, corner-offset and body-mask heads"
        + (" + a C7/S1 ends heatmap head" if heads["ends_head"] else "")
        + (" + a level head (which vertebra each centre is)" if heads["level_head"] else ""),
        architecture_config={"builder": "training.landmarks.build_landmark_model", "input_hw": list(input_hw), **heads},
        parameters=int(model.count_params()),
        opset=OPSET,
        training_data=info["training_data"],
        split=info["split"],
        epochs=info["epochs"],
        training_time_s=info.get("training_time_s"),
        trained_on=info.get("trained_on"),
        metrics=metrics,
        parity_max_abs_diff=diff,
        validated=validated,
        notes=(
            f"Vertebra-focused landmark model: T1..L5 centres as heatmap peaks, four corners each as offsets "
            f"(spine_core.landmarks). {_origin(info)}. validated: {validated} by the rule in training/landmarks_export.py "
            f"(every validation film answered, SMAPE over all films <= {MAX_VALIDATED_SMAPE} % or below the mask "
            f"geometry's, {replaced})."
        ),
    )
    upsert_model(models_dir, entry, _now())
    return entry


def choose_served_mask(models_dir: Path, evaluation: dict) -> bool:
    """Serve the Ap_Vertebra mask filled from the landmark model's corners when, on the validation films of a
    `spine-evaluate aasce` run that served the U-Net's mask, its Dice beats the U-Net's; written to the manifest."""
    from spine_core.manifest import load_manifest, save_manifest

    segmentation = evaluation["segmentation"]
    corners, unet = segmentation.get("Ap_Vertebra_from_corners"), segmentation["Ap_Vertebra"]
    if evaluation.get("policy", {}).get("vertebra_mask") not in (None, "unet", "auto") or corners is None:
        raise ValueError("needs a spine-evaluate run whose served mask is the U-Net's, with corners on every film")
    manifest = load_manifest(models_dir)
    entry = manifest.by_name()[LANDMARK_MODEL_NAME]
    entry.serves_mask = bool(corners["n"] == unet["n"] and corners["dice_mean"] > unet["dice_mean"])
    entry.metrics.update(val_dice_unet_mask=unet["dice_mean"], val_dice_corner_mask=corners["dice_mean"])
    save_manifest(manifest, models_dir)
    return entry.serves_mask
