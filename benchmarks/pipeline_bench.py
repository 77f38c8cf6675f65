"""In-process pipeline: stage timings of /classify's work and before/after of the post-processing changes.

A label-only /classify (include_masks=false: masks never resized to the original size) runs in the same
loop. Where the manifest lists int8 variants, a second registry serves them (ModelRegistry.load(precision="int8"),
what SPINE_PRECISION=int8 runs): its /classify is timed in the same loop as the fp32 one, and its masks of
the study are compared with the fp32 masks. Where the manifest has a refinement model, a registry serving it
(ModelRegistry.load(use_refinement=True), SPINE_REFINEMENT=true) runs in the loop too: the second stage's cost.

Before/after pairs run on the same masks in one interleaved loop:
  - mask -> original size: the full-image resize (spine_core.probabilities_to_source_mask, before) vs the
    resize of the region a True pixel can reach (spine_core.preprocessing.source_mask, after); differing pixels counted;
  - mask -> base64 PNG: Pillow at compress level 6 (before) vs the direct 1-bit writer (after) at levels 1, 3, 6;
  - mask area: bool sum (before) vs count_nonzero (after).
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.http_bench import Images
from benchmarks.timing import interleaved, summarize
from training.metrics import dice


def _probabilities(registry, image: np.ndarray, view: str) -> dict[str, tuple[np.ndarray, Any, float]]:
    from spine_core.preprocessing import preprocess_image, to_unet_batch

    out = {}
    for structure in registry.structures_for(view):
        model = registry.segmentation_model(structure)
        x, box = preprocess_image(image, model.input_hw)
        prob = model.session.run([model.entry.output_name], {model.entry.input_name: to_unet_batch([x])})[0][0, :, :, 0]
        out[structure] = (prob, box, model.threshold)
    return out


def run_pipeline(models_dir: Path, images: Images, runs: int, warmup: int, log=print) -> dict[str, Any]:
    from PIL import Image

    from spine_core.preprocessing import probabilities_to_source_mask, source_mask
    from spine_engine import ModelRegistry, RuntimeTuning, answers
    from spine_engine.decoding import decode_image
    from spine_engine.engine import Engine
    from spine_engine.masks import png_1bit, png_base64
    from spine_engine.policy import AnalysisPolicy
    from spine_engine.study import Film, StudyRequest

    # The workload timed is a whole AP+LAT study through every U-Net (as before demonstration models were left
    # out by default), on films that need not be spines: what decides the label is not measured here.
    workload = AnalysisPolicy(demonstration_models=True, demonstration_models_decide=True, spine_check=False)

    registry = ModelRegistry.load(models_dir, providers=["CPUExecutionProvider"], tuning=RuntimeTuning())
    registries = {"fp32": registry}
    if registry.manifest is not None and any("int8" in m.variants for m in registry.manifest.models):
        registries["int8"] = ModelRegistry.load(
            models_dir, providers=["CPUExecutionProvider"], tuning=RuntimeTuning(), precision="int8"
        )
    if registry.manifest is not None and registry.manifest.refinement_models():
        registries["fp32, two-stage"] = ModelRegistry.load(
            models_dir, providers=["CPUExecutionProvider"], tuning=RuntimeTuning(), use_refinement=True
        )
    study = images.studies[0]
    result: dict[str, Any] = {"study": study.label}

    # 1. stage timings of one AP+LAT /classify, in process (no HTTP); fp32 and int8 alternate in one loop
    if registry.classifier() is not None:
        log(f"  /classify stages in process ({', '.join(registries)}) ...")
        films = (Film(study.ap, study.ap_name, "AP"), Film(study.lat, study.lat_name, "LAT"))

        def classify_study(reg: ModelRegistry, with_masks: bool) -> Any:
            request = StudyRequest(films=films, policy=workload, source_masks=with_masks)
            return answers.classify(Engine(reg, workload), request, include_masks=with_masks)

        # (registry, include_masks) per variant: "no masks" is a label-only client (include_masks=false),
        # whose masks are never resized back to the original size.
        variants = {p: (reg, True) for p, reg in registries.items()} | {"fp32, no masks": (registry, False)}
        for reg, with_masks in variants.values():
            for _ in range(warmup):
                classify_study(reg, with_masks)
        totals: dict[str, list[float]] = {p: [] for p in variants}
        stages: dict[str, list[dict[str, float]]] = {p: [] for p in variants}
        order = list(variants)
        for i in range(runs):
            for name in order[i % len(order) :] + order[: i % len(order)]:
                reg, with_masks = variants[name]
                t0 = time.perf_counter()
                r = classify_study(reg, with_masks)
                totals[name].append(time.perf_counter() - t0)
                stages[name].append(r.timings_ms)

        def median_stages(rows: list[dict[str, float]]) -> dict[str, float]:
            return {k: float(np.median([s[k] for s in rows])) for k in rows[0]}

        result["classify_stages_ms_median"] = median_stages(stages["fp32"])
        result["classify_total"] = summarize(totals["fp32"])
        no_masks = summarize(totals["fp32, no masks"])
        result["classify_no_masks"] = {
            "stages_ms_median": median_stages(stages["fp32, no masks"]),
            "total": no_masks,
            "speedup_total_vs_with_masks": result["classify_total"]["median_ms"] / no_masks["median_ms"],
        }
        if "fp32, two-stage" in registries:
            two_stage = summarize(totals["fp32, two-stage"])
            result["classify_two_stage"] = {
                "stages_ms_median": median_stages(stages["fp32, two-stage"]),
                "total": two_stage,
                "cost_ratio_vs_first_stage": two_stage["median_ms"] / result["classify_total"]["median_ms"],
                "refinement_models": [m.name for m in registry.manifest.refinement_models()],
            }
        if "int8" in registries:
            int8_total = summarize(totals["int8"])
            result["classify_int8"] = {
                "stages_ms_median": median_stages(stages["int8"]),
                "total": int8_total,
                "speedup_total_vs_fp32": result["classify_total"]["median_ms"] / int8_total["median_ms"],
                "precision_served": {n: m.precision for n, m in registries["int8"].models.items()},
            }

    # 2. post-processing before/after on the real masks
    log("  post-processing before/after ...")
    post: dict[str, Any] = {}
    encode: dict[str, Any] = {}
    int8_masks: dict[str, Any] = {}
    for view, data in (("AP", study.ap), ("LAT", study.lat)):
        image = decode_image(data, 10**9).pixels
        probs = _probabilities(registry, image, view)
        if "int8" in registries:
            # The int8 file's mask of this study vs the fp32 one, at the original size (what a client gets).
            for structure, (prob, box, thr) in _probabilities(registries["int8"], image, view).items():
                a, b = source_mask(probs[structure][0], box, thr), source_mask(prob, box, thr)
                int8_masks[structure] = {
                    "precision": registries["int8"].segmentation_model(structure).precision,
                    "dice_vs_fp32": dice(a, b),
                    "differing_pixels": int(np.count_nonzero(a != b)),
                }
        for structure, (prob, box, thr) in probs.items():
            before = probabilities_to_source_mask(prob, box, thr)
            after = source_mask(prob, box, thr)
            stats = interleaved(
                {
                    "full_resize": lambda p=prob, b=box, t=thr: probabilities_to_source_mask(p, b, t),
                    "cropped_resize": lambda p=prob, b=box, t=thr: source_mask(p, b, t),
                },
                max(3, runs // 2),
                1,
            )
            post[structure] = {
                "before_ms": stats["full_resize"]["median_ms"],
                "after_ms": stats["cropped_resize"]["median_ms"],
                "differing_pixels": int(np.count_nonzero(before != after)),
                "mask_fraction": float(np.count_nonzero(after) / after.size),
                "size": [int(after.shape[1]), int(after.shape[0])],
            }
            fns = {
                "pillow_level6": lambda m=after: png_base64(m),
                **{f"direct_level{lv}": (lambda m=after, lv=lv: base64.b64encode(png_1bit(m, lv))) for lv in (1, 3, 6)},
                "area_sum": lambda m=after: int(m.sum()),
                "area_count_nonzero": lambda m=after: int(np.count_nonzero(m)),
            }
            stats = interleaved(fns, max(3, runs // 2), 1)
            sizes = {"pillow_level6": len(png_base64(after))}
            sizes.update({f"direct_level{lv}": len(base64.b64encode(png_1bit(after, lv))) for lv in (1, 3, 6)})
            decoded = np.asarray(Image.open(io.BytesIO(png_1bit(after))))
            encode[structure] = {
                **{f"{k}_ms": v["median_ms"] for k, v in stats.items()},
                **{f"{k}_base64_bytes": v for k, v in sizes.items()},
                "direct_png_decodes_equal": bool(decoded.shape == after.shape and np.array_equal(decoded, after)),
            }
    if int8_masks:
        result["int8_masks_vs_fp32"] = int8_masks
    result["postprocess"] = post
    result["encode"] = encode
    result["postprocess_total_ms"] = {
        "before": sum(v["before_ms"] for v in post.values()),
        "after": sum(v["after_ms"] for v in post.values()),
    }
    result["encode_total_ms"] = {
        "before (pillow level 6 + bool sum)": sum(v["pillow_level6_ms"] + v["area_sum_ms"] for v in encode.values()),
        "after (direct level 3 + count_nonzero)": sum(
            v["direct_level3_ms"] + v["area_count_nonzero_ms"] for v in encode.values()
        ),
    }
    return result
