"""Levels on full-body films: are T1 and L5 the right vertebrae, and does the served mask stay on the spine?

    python scripts/levels_check.py ../shared/data/aasce-unlabelled --marks docs/fov/large_film_marks.json \
        --json out.json [--models exported_models] [--measurement landmarks|mask] [--overlays DIR] \
        [--only FILM ... | --held-out-by RUN]

Every hand-marked film goes through what `POST /classify` runs (`spine_engine.study.analyze_study`, the
default policy, the spine check off so that a refused film is still scored). Per film:

- t1_error / l5_error: where the served T1's upper endplate (L5's lower endplate) lies against the marked
  one, in vertebrae (the served vertebrae's own spacing near that end); |error| < 0.5 is the right vertebra;
- corridor_share, row_coverage_bridged: the served Ap_Vertebra mask against the marked T1-L5 corridor
  (`scripts/fov_check.py` defines them);
- measurement_ms: the served `timings_ms.measurement`, seconds: the whole analysis.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "scripts"):
    if str(path) not in sys.path:  # run as a file from anywhere
        sys.path.insert(0, str(path))

from fov_check import corridor_scores, save_overlay  # noqa: E402

from spine_engine.engine import Engine  # noqa: E402
from spine_engine.policy import AnalysisPolicy  # noqa: E402
from spine_engine.registry import ModelRegistry  # noqa: E402
from spine_engine.settings import EngineSettings  # noqa: E402
from spine_engine.study import Film, StudyRequest, analyze_study  # noqa: E402


def level_error(corners: np.ndarray, marked_y: float, end: str) -> float:
    """Signed distance in vertebrae from the served end's endplate to the marked one (+: served lies lower)."""
    centres = corners.mean(axis=1)
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    if end == "top":
        served_y, pitch = corners[0, :2, 1].mean(), float(np.median(steps[:4]))
    else:
        served_y, pitch = corners[-1, 2:, 1].mean(), float(np.median(steps[-4:]))
    return float((served_y - marked_y) / max(pitch, 1.0))


def check_film(engine: Engine, path: Path, film: dict, policy: AnalysisPolicy) -> tuple[dict, np.ndarray, np.ndarray]:
    started = time.perf_counter()
    request = StudyRequest(films=(Film(path.read_bytes(), path.name, "AP"),), policy=policy, max_pixels=10**9)
    study = analyze_study(engine, request)
    seconds = time.perf_counter() - started
    ap = study.views["AP"]
    mask = ap.result.masks["Ap_Vertebra"]
    row: dict = {
        "kind": film.get("kind"),
        "seconds": round(seconds, 3),
        "measurement_ms": round(study.timings_ms.get("measurement", float("nan")), 1),
        "source": ap.reading.source,
        **corridor_scores(mask, film),
    }
    vertebrae = ap.reading.vertebrae
    if vertebrae is not None and len(vertebrae.vertebrae) == 17:
        corners = np.stack([v.corners for v in vertebrae.vertebrae])
        row["t1_error"] = round(level_error(corners, film["t1_top"][1], "top"), 2)
        row["l5_error"] = round(level_error(corners, film["l5_bottom"][1], "bottom"), 2)
        row["angles"] = ap.reading.cobb.aasce_angles_deg if ap.reading.cobb else None
    else:
        row["t1_error"] = row["l5_error"] = None
        row["reason"] = vertebrae.reason if vertebrae is not None else "not measured"
    return row, ap.image.pixels, mask


def summarise(rows: dict[str, dict]) -> dict:
    scored = [r for r in rows.values() if r.get("t1_error") is not None]
    right = lambda key: float(np.mean([abs(r[key]) < 0.5 for r in scored])) if scored else float("nan")  # noqa: E731
    shares = [r["corridor_share"] for r in rows.values()]
    return {
        "films": len(rows),
        "films_measured": len(scored),
        "t1_right": right("t1_error"),
        "l5_right": right("l5_error"),
        "both_right": float(np.mean([abs(r["t1_error"]) < 0.5 and abs(r["l5_error"]) < 0.5 for r in scored])) if scored else None,
        "corridor_share_mean": float(np.mean(shares)),
        "corridor_share_min": float(np.min(shares)),
        "row_coverage_bridged_mean": float(np.mean([r["row_coverage_bridged"] for r in rows.values()])),
        "measurement_ms_median": float(np.median([r["measurement_ms"] for r in rows.values()])),
        "seconds_median": float(np.median([r["seconds"] for r in rows.values()])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films_dir")
    parser.add_argument("--marks", default=str(REPO / "docs" / "fov" / "large_film_marks.json"))
    parser.add_argument("--models", default=str(REPO / "exported_models"))
    parser.add_argument("--measurement", choices=["landmarks", "mask"], default="landmarks")
    parser.add_argument("--json", default=None)
    parser.add_argument("--overlays", default=None, help="folder for one PNG a film (mask and corridor)")
    parser.add_argument("--only", nargs="*", default=None, help="film names to check (default: every marked film)")
    parser.add_argument("--held-out-by", default=None, help="an ends run trained with --folds: only the films it held out")
    args = parser.parse_args()
    marks = json.loads(Path(args.marks).read_text())["films"]
    if args.held_out_by:
        args.only = json.loads((Path(args.held_out_by) / "run_info.json").read_text())["full_body_held_out"]
    names = [n for n in marks if (args.only is None or n in args.only) and marks[n].get("kind") != "not_ap_spine"]
    registry = ModelRegistry.load(Path(args.models), providers=["CPUExecutionProvider"], warmup=False)
    policy = replace(EngineSettings().policy(), spine_check=False, measurement=args.measurement)
    engine = Engine(registry, policy)
    rows = {}
    for name in names:
        rows[name], pixels, mask = check_film(engine, Path(args.films_dir) / name, marks[name], policy)
        print(name, {k: rows[name].get(k) for k in ("t1_error", "l5_error", "corridor_share", "measurement_ms", "seconds")})
        if args.overlays:
            Path(args.overlays).mkdir(parents=True, exist_ok=True)
            save_overlay(pixels, {"served": mask}, marks[name], Path(args.overlays) / f"{Path(name).stem}.png")
    out = {"measurement": args.measurement, "summary": summarise(rows), "films": rows}
    print(json.dumps(out["summary"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
