"""Field-of-view check: do full-body AP films get vertebra masks on T1-L5 and nowhere else?

    python scripts/fov_check.py ../shared/data/aasce-unlabelled --marks docs/fov/large_film_marks.json \
        --json out.json [--overlays /tmp/fov] [--aasce ../shared/data/aasce-train]

For each hand-marked film, three masks of `Ap_Vertebra` (the service's model and preprocessing):
`plain` (registry.segment, what the service returns today), `chain` (plain, only its vertical chain of
components) and `localised` (`spine_engine.localisation.localise_and_segment`: chain, then a second
pass in a window around it when the chain covers a small part of the film). Scores against the marks:

- spine corridor: rows from T1's upper endplate to L5's lower endplate (each end widened by END_TOLERANCE
  of the T1-L5 length, the marks' vertical uncertainty), and in each row the pixels within HALF_WIDTH of
  the T1-L5 length, horizontally, of the marked centreline (linear between the marks);
- corridor_share: share of the mask's pixels inside the corridor (1.0 = nothing outside the spine);
- row_coverage: share of the T1-L5 rows with at least one mask pixel inside the corridor (the discs between
  separate bodies are not covered, so a perfect mask of separate bodies scores under 1);
- row_coverage_bridged: the same with uncovered runs up to DISC_BRIDGE of the length counted as covered.

`--aasce DIR` also scores Dice on the AASCE validation split (as `spine-evaluate aasce`: original size,
masks filled from the ground-truth corners) for the three masks, and for a second pass forced on every film.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(REPO))

from spine_core.spine_chain import keep_chain  # noqa: E402
from spine_engine import ModelRegistry  # noqa: E402
from spine_engine.decoding import decode_image  # noqa: E402
from spine_engine.localisation import LocalisationSettings, Localised, localise_and_segment  # noqa: E402

HALF_WIDTH = 0.06  # corridor half-width, share of the T1-L5 polyline length
END_TOLERANCE = 0.02  # rows kept beyond T1 top / L5 bottom, share of the same length
DISC_BRIDGE = 0.02  # row_coverage_bridged: uncovered runs up to this share of the length (a disc) count as covered
METHODS = ("plain", "chain", "localised")


def polyline(film: dict) -> np.ndarray:
    """(N, 2) x, y points T1 top -> centreline -> L5 bottom, sorted by y."""
    pts = np.asarray([film["t1_top"], *film["centreline"], film["l5_bottom"]], dtype=np.float64)
    return pts[np.argsort(pts[:, 1], kind="stable")]


def corridor(film: dict, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows of T1-L5, centre x of each of those rows, half-width) of the spine corridor."""
    pts = polyline(film)
    length = float(np.hypot(*np.diff(pts, axis=0).T).sum())
    tolerance = END_TOLERANCE * length
    top, bottom = max(0, round(pts[0, 1] - tolerance)), min(shape[0], round(pts[-1, 1] + tolerance) + 1)
    rows = np.arange(top, bottom)
    return rows, np.interp(rows, pts[:, 1], pts[:, 0]), np.full(rows.shape, HALF_WIDTH * length)


def corridor_scores(mask: np.ndarray, film: dict) -> dict[str, float | int]:
    """corridor_share and row_coverage of one bool mask (see the module doc) with the counts behind them."""
    rows, centre, half = corridor(film, mask.shape)
    ys, xs = np.nonzero(mask)
    inside = np.zeros(ys.shape, dtype=bool)
    in_rows = (ys >= rows[0]) & (ys <= rows[-1])
    k = ys[in_rows] - rows[0]
    inside[in_rows] = np.abs(xs[in_rows] - centre[k]) <= half[k]
    covered = np.zeros(rows.shape, dtype=bool)
    covered[ys[inside] - rows[0]] = True
    bridge = max(1, round(DISC_BRIDGE / HALF_WIDTH * half[0]))  # half = HALF_WIDTH x the T1-L5 length
    bridged = ndimage.binary_closing(np.pad(covered, bridge, constant_values=True), np.ones(bridge + 1, bool))[bridge:-bridge]
    return {
        "mask_px": int(ys.size),
        "inside_px": int(inside.sum()),
        "corridor_share": float(inside.mean()) if ys.size else 0.0,
        "rows": int(rows.size),
        "covered_rows": int(covered.sum()),
        "row_coverage": float(covered.mean()),
        "covered_rows_bridged": int((bridged & covered.any()).sum()),
        "row_coverage_bridged": float((bridged & covered.any()).mean()),
    }


def method_masks(result: Localised) -> dict[str, np.ndarray]:
    return {"plain": result.first_pass, "chain": keep_chain(result.first_pass).mask, "localised": result.mask}


def save_overlay(pixels: np.ndarray, masks: dict[str, np.ndarray], film: dict, path: Path, height: int = 1000) -> None:
    """Side by side, one panel a method: mask in red, corridor edges in green (a picture for a person)."""
    gray = pixels if pixels.ndim == 2 else pixels[..., :3].mean(axis=2)
    scale = height / gray.shape[0]
    size = (max(1, round(gray.shape[1] * scale)), height)
    lo, hi = np.percentile(gray, (1, 99))
    base = np.asarray(Image.fromarray(np.clip((gray - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)).resize(size))
    rows, centre, half = corridor(film, gray.shape)
    panels = []
    for mask in masks.values():
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size)) > 127
        rgb = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
        rgb[small] = rgb[small] * 0.4 + np.array([255, 0, 0]) * 0.6
        for sign in (-1, 1):
            ys = np.clip((rows * scale).astype(int), 0, height - 1)
            xs = np.clip(((centre + sign * half) * scale).astype(int), 0, size[0] - 1)
            rgb[ys, xs] = (0, 255, 0)
        panels.append(rgb.astype(np.uint8))
    gap = np.full((height, 8, 3), 255, dtype=np.uint8)
    Image.fromarray(np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)).save(path)


def summarise(per_film: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Per method: pooled shares over all films (pixel and row counts summed) and the per-film means."""
    out = {}
    for method in METHODS:
        scores = [film[method] for film in per_film.values()]
        rows = max(1, sum(s["rows"] for s in scores))
        out[method] = {
            "corridor_share_pooled": sum(s["inside_px"] for s in scores) / max(1, sum(s["mask_px"] for s in scores)),
            "row_coverage_pooled": sum(s["covered_rows"] for s in scores) / rows,
            "row_coverage_bridged_pooled": sum(s["covered_rows_bridged"] for s in scores) / rows,
            "corridor_share_mean": float(np.mean([s["corridor_share"] for s in scores])),
            "row_coverage_mean": float(np.mean([s["row_coverage"] for s in scores])),
        }
    return out


def scale_film(pixels: np.ndarray, film: dict, scale: float) -> tuple[np.ndarray, dict]:
    """The film resized by `scale` (Pillow Lanczos) and its marks with it: the same check at another resolution."""
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    resized = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
    points = {key: (np.asarray(film[key], dtype=np.float64) * scale).tolist() for key in ("t1_top", "l5_bottom", "centreline")}
    return resized, {**film, **points, "width": size[0], "height": size[1]}


def check_films(
    registry: ModelRegistry,
    data_dir: Path,
    marks: dict,
    settings: LocalisationSettings,
    overlays: Path | None = None,
    scale: float = 1.0,
) -> dict:
    per_film: dict[str, dict] = {}
    for name, film in marks["films"].items():
        path = data_dir / name
        pixels = decode_image(path.read_bytes(), 10**9, name).pixels
        if pixels.shape[:2] != (film["height"], film["width"]):
            marked = f"{film['width']}x{film['height']}"
            raise SystemExit(f"{name}: image is {pixels.shape[1]}x{pixels.shape[0]}, the marks say {marked}")
        if scale != 1.0:
            pixels, film = scale_film(pixels, film, scale)
        started = time.perf_counter()
        result = localise_and_segment(registry, pixels, settings)
        seconds = time.perf_counter() - started
        masks = method_masks(result)
        per_film[name] = {method: corridor_scores(masks[method], film) for method in METHODS}
        per_film[name]["chain_share"] = result.chain_share
        per_film[name]["window"] = result.window.as_list() if result.window else None
        per_film[name]["passes"] = result.passes
        per_film[name]["bodies"] = [round(b, 1) for b in result.bodies]
        per_film[name]["localised_seconds"] = round(seconds, 2)
        if overlays is not None:
            overlays.mkdir(parents=True, exist_ok=True)
            save_overlay(pixels, masks, film, overlays / f"{Path(name).stem}.png")
        shown = {m: (round(per_film[name][m]["corridor_share"], 3), round(per_film[name][m]["row_coverage"], 3)) for m in METHODS}
        print(name, "(corridor_share, row_coverage):", shown)
    return {"films": per_film, "summary": summarise(per_film)}


def check_aasce(registry: ModelRegistry, data_dir: Path, settings: LocalisationSettings, limit: int | None = None) -> dict:
    """Dice of each method (and of a forced second pass) on the AASCE validation split, as spine-evaluate scores it."""
    from training.cli import aasce_sample_split
    from training.datasets import read_aasce_dataset
    from training.evaluate_figures import dice_summary
    from training.metrics import dice

    samples = read_aasce_dataset(data_dir)
    _, val_idx = aasce_sample_split(samples)
    samples = [samples[i] for i in val_idx][:limit]
    forced = replace(settings, max_chain_share=float("inf"), min_gain=float("-inf"))
    dices: dict[str, list[float]] = {m: [] for m in (*METHODS, "second_pass_always")}
    shares, per_image = [], []
    for sample in samples:
        image = sample.image()
        truth = sample.vertebra_mask(image.shape[0], image.shape[1])
        result = localise_and_segment(registry, image, settings)
        masks = method_masks(result)
        masks["second_pass_always"] = localise_and_segment(registry, image, forced).mask
        row = {"image": sample.name, "chain_share": result.chain_share, "second_pass": result.window is not None}
        for method, mask in masks.items():
            row[method] = dice(mask, truth)
            dices[method].append(row[method])
        shares.append(result.chain_share)
        per_image.append(row)
    return {
        "n_images": len(samples),
        "dice": {m: dice_summary(v) for m, v in dices.items()},
        "second_pass_ran": int(sum(r["second_pass"] for r in per_image)),
        "chain_share": {"min": float(np.min(shares)), "p5": float(np.percentile(shares, 5)), "median": float(np.median(shares))},
        "per_image": per_image,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="folder of the marked films (../shared/data/aasce-unlabelled)")
    parser.add_argument("--marks", type=Path, default=REPO / "docs" / "fov" / "large_film_marks.json")
    parser.add_argument("--models", type=Path, default=REPO / "exported_models")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--overlays", type=Path, help="write one PNG a film here (plain | chain | localised)")
    parser.add_argument("--scale", type=float, default=1.0, help="resize the films (and marks) by this factor first")
    parser.add_argument("--aasce", type=Path, help="also score Dice on the AASCE validation split in this folder")
    parser.add_argument("--aasce-limit", type=int, help="only the first N validation images")
    parser.add_argument("--max-chain-share", type=float, default=LocalisationSettings.max_chain_share)
    parser.add_argument("--search", type=float, nargs=2, default=LocalisationSettings.search, help="second pass: widths up, down")
    parser.add_argument("--fit", type=float, nargs=2, default=LocalisationSettings.fit, help="third pass: widths up, down")
    args = parser.parse_args(argv)
    settings = LocalisationSettings(max_chain_share=args.max_chain_share, search=tuple(args.search), fit=tuple(args.fit))
    registry = ModelRegistry.load(args.models, providers=["CPUExecutionProvider"], warmup=False)
    marks = json.loads(args.marks.read_text())
    report: dict = {
        "rule": f"corridor: T1 top to L5 bottom (+-{END_TOLERANCE:.0%}), +-{HALF_WIDTH:.0%} of the T1-L5 length "
        "horizontally around the marked centreline",
        "settings": settings.__dict__,
        "scale": args.scale,
        **check_films(registry, args.data_dir, marks, settings, args.overlays, args.scale),
    }
    if args.aasce:
        report["aasce_val"] = check_aasce(registry, args.aasce, settings, args.aasce_limit)
    print(json.dumps({k: report[k] for k in ("summary",)} | {"aasce_dice": report.get("aasce_val", {}).get("dice")}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
