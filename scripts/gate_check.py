"""How the "no spine found" gate (spine_core.spine_gate) does on inputs that are not AP spine radiographs,
and on real films it must never refuse.

.venv/bin/python scripts/gate_check.py [--aasce ../shared/data/aasce-train] [--large ../shared/data/aasce-unlabelled]
    [--models exported_models] [--limit N] [--json OUT.json] [--refinement] [--precision int8]

Every input goes the endpoint's way: file bytes -> spine_engine.decoding.decode_image -> the committed
Ap_Vertebra U-Net (registry.segment, the model-frame mask) -> check_spine (with the image statistics,
and a DICOM file's Modality). The large films are also gated with their mask cut down to the vertebra
chain (components in the skull or below the sacrum dropped), as a chain-keeping step would leave them. Prints how many corpus
inputs pass (target 0), how many real films are refused (target 0), and for each gate feature the
margin between the closest corpus input and the weakest real film.

The corpus (`build_corpus`, also used by tests/service/test_not_a_spine_corpus.py) is generated or
ships with packages: blank, noise, gradients, a checkerboard, text-like strokes, a synthetic spine
drawn into a tiny corner of a big canvas, scikit-image's sample photographs and micrographs, and
pydicom's CT, MR, nuclear-medicine and ultrasound test files. With --aasce, two real films shrunk into
a corner of a large blank canvas ("spine too small to read") are added.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class CorpusItem:
    name: str
    kind: str  # generated | skimage | pydicom | aasce-shrunk
    data: bytes  # file bytes, as a client would upload them
    filename: str


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _synthetic_spine(height: int = 900, width: int = 360, seed: int = 0) -> np.ndarray:
    """A radiograph-like drawing: soft-tissue band, a gently curved column of 17 bright vertebral bodies."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (width, height), 25)
    draw = ImageDraw.Draw(img)
    draw.ellipse([width * 0.08, -height * 0.1, width * 0.92, height * 1.1], fill=70)
    top, bottom = height * 0.06, height * 0.94
    pitch = (bottom - top) / 17
    for level in range(17):
        cy = top + pitch * (level + 0.5)
        cx = width / 2 + width * 0.06 * np.sin(np.pi * (cy - top) / (bottom - top))
        half_w = width * (0.07 + 0.05 * level / 16)
        half_h = pitch * 0.36
        draw.rounded_rectangle([cx - half_w, cy - half_h, cx + half_w, cy + half_h], radius=4, fill=190)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (height, width))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _in_corner(small: np.ndarray, canvas_hw: tuple[int, int], height_fraction: float, fill: int = 0) -> np.ndarray:
    """`small` shrunk to `height_fraction` of a blank canvas's height, near its top-left: a spine too small to read."""
    h, w = small.shape[:2]
    scale = canvas_hw[0] * height_fraction / h
    shrunk = np.asarray(Image.fromarray(small).resize((max(1, round(w * scale)), max(1, round(h * scale)))))
    canvas = np.full(canvas_hw, fill, dtype=np.uint8)
    y, x = canvas_hw[0] // 20, canvas_hw[1] // 20
    canvas[y : y + shrunk.shape[0], x : x + shrunk.shape[1]] = shrunk
    return canvas


def _text_like(seed: int = 1) -> np.ndarray:
    """Rows of dark glyph-like strokes on white: a scanned page."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (800, 1100), 245)
    draw = ImageDraw.Draw(img)
    for y in range(60, 1040, 28):
        x = 60
        while x < 720:
            word = int(rng.integers(15, 70))
            for gx in range(x, min(x + word, 740), 7):
                draw.line([gx, y, gx + int(rng.integers(-3, 4)), y + int(rng.integers(8, 16))], fill=20, width=2)
            x += word + 12
    return np.asarray(img)


def generated_inputs() -> list[CorpusItem]:
    rng = np.random.default_rng(0)
    h, w = 1200, 500
    yy, xx = np.mgrid[0:h, 0:w]
    arrays: dict[str, np.ndarray] = {
        "all_black": np.zeros((h, w), np.uint8),
        "all_white": np.full((h, w), 255, np.uint8),
        "uniform_noise": rng.integers(0, 256, (h, w), dtype=np.uint8),
        "gaussian_noise": np.clip(rng.normal(128, 40, (h, w)), 0, 255).astype(np.uint8),
        "vertical_gradient": (yy * 255 // (h - 1)).astype(np.uint8),
        "horizontal_gradient": (xx * 255 // (w - 1)).astype(np.uint8),
        "checkerboard": (((yy // 40) + (xx // 40)) % 2 * 255).astype(np.uint8),
        "text_like": _text_like(),
        "spine_too_small": _in_corner(_synthetic_spine(), (3000, 2400), 0.3),
    }
    return [CorpusItem(name, "generated", _png(a), f"{name}.png") for name, a in arrays.items()]


def skimage_inputs() -> list[CorpusItem]:
    from skimage import data

    names = ["astronaut", "camera", "coffee", "chelsea", "rocket", "moon", "brick", "grass", "coins", "page", "retina", "cell"]
    items = []
    for name in names:
        array = np.asarray(getattr(data, name)())
        items.append(CorpusItem(f"skimage.{name}", "skimage", _png(array), f"{name}.png"))
    return items


# pydicom's own test files: CT slices (chest/head), MR, a whole-body nuclear-medicine scan, ultrasound.
PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "J2K_pixelrep_mismatch.dcm", "examples_overlay.dcm")


def pydicom_inputs() -> list[CorpusItem]:
    from pydicom.data import get_testdata_file

    items = []
    for name in PYDICOM_FILES:
        path = get_testdata_file(name)
        if path is not None:
            items.append(CorpusItem(f"pydicom.{name}", "pydicom", Path(str(path)).read_bytes(), name))
    return items


def shrunk_film_inputs(aasce_dir: Path, count: int = 2, fractions: tuple[float, ...] = (0.3, 0.5)) -> list[CorpusItem]:
    """Real AASCE films shrunk to a fraction of a large blank square canvas's height (needs ../shared; never committed)."""
    images = sorted((aasce_dir / "images").glob("*.jpg"))[:count]
    items = []
    for path in images:
        film = np.asarray(Image.open(path).convert("L"))
        for fraction in fractions:
            side = round(film.shape[0] / fraction)
            canvas = _in_corner(film, (side, side), fraction)
            name = f"aasce_shrunk_{fraction:.1f}.{path.stem}"
            items.append(CorpusItem(name, "aasce-shrunk", _png(canvas), f"{path.stem}.png"))
    return items


def build_corpus(aasce_dir: Path | None = None) -> list[CorpusItem]:
    corpus = generated_inputs() + skimage_inputs() + pydicom_inputs()
    if aasce_dir is not None:
        corpus += shrunk_film_inputs(aasce_dir)
    return corpus


def real_film_inputs(folder: Path, kind: str, limit: int | None = None) -> list[CorpusItem]:
    paths = sorted(folder.glob("*.jpg"))[:limit] if limit else sorted(folder.glob("*.jpg"))
    return [CorpusItem(p.name, kind, p.read_bytes(), p.name) for p in paths]


def chain_only(mask: np.ndarray, box, top: float = 0.2, bottom: float = 0.9) -> np.ndarray:
    """The mask without components centred above `top` or below `bottom` of the image's height (skull, sacrum):
    roughly what a step that keeps only the vertebra chain leaves on a full-body film."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    centres = ndimage.center_of_mass(mask, labels, range(1, n + 1))
    lo, hi = box.top + top * box.content_h, box.top + bottom * box.content_h
    return np.isin(labels, [i + 1 for i, (cy, _) in enumerate(centres) if lo <= cy <= hi])


def gate_features(registry, item: CorpusItem, chain_only_too: bool = False) -> dict:
    """What POST /classify answers with default settings (the front door, spine_engine.study.analyze_study: decode,
    segment, localise, the spine check): refused with its reason, or labelled. registry: spine_engine.ModelRegistry."""
    from spine_engine import NoSpineFoundError
    from spine_engine.decoding import ImageDecodeError
    from spine_engine.engine import Engine
    from spine_engine.errors import NotARadiographError
    from spine_engine.study import Film, StudyRequest, analyze_study

    engine = Engine(registry)
    row: dict = {"name": item.name, "kind": item.kind}
    request = StudyRequest(films=(Film(item.data, item.filename, "AP"),), policy=engine.policy, max_pixels=1_000_000_000)
    try:
        study = analyze_study(engine, request)
    except NoSpineFoundError as exc:
        return {**row, "ok": False, "failed": exc.failed, "features": exc.features, "code": exc.code}
    except NotARadiographError as exc:  # a CT, MR, NM... DICOM: refused by its Modality before any model ran
        return {**row, "ok": False, "failed": ["modality"], "features": {}, "code": exc.code}
    except ImageDecodeError as exc:  # e.g. a DICOM without pixel data: refused before any model ran
        return {**row, "ok": False, "failed": ["decode"], "features": {}, "code": exc.code}
    decoded = {view: v.image for view, v in study.views.items()}
    reading = study.views["AP"].reading
    row.update(ok=True, failed=[], features=reading.gate.features if reading.gate else {}, label=study.decision.label)
    if chain_only_too:
        from spine_core.spine_gate import check_spine, image_statistics

        result = study.views["AP"].result
        mask, stats = result.model_frame_masks["Ap_Vertebra"], image_statistics(decoded["AP"].pixels)
        chain = check_spine(chain_only(mask, result.letterbox), stats, result.letterbox, decoded["AP"].modality)
        row["chain_only"] = {"ok": chain.ok, "failed": chain.failed, "features": chain.features}
    return row


BOUNDS = {  # feature -> (threshold attribute, which side of it refuses)
    "vertical_extent": ("min_vertical_extent", "below"),
    "area_fraction": ("min_area_fraction", "below"),
    "components": ("min_components", "below"),
    "contrast": ("min_contrast", "below"),
    "high_frequency": ("min_high_frequency", "below"),
    "high_frequency ": ("max_high_frequency", "above"),
}


def margins(corpus: list[dict], real: list[dict]) -> list[dict]:
    """Per bound: the weakest real film and the corpus input closest to passing it (from the refusing side)."""
    from spine_core.spine_gate import DEFAULT_THRESHOLDS

    rows = []
    for key, (attribute, side) in BOUNDS.items():
        feature, bound = key.strip(), getattr(DEFAULT_THRESHOLDS, attribute)
        sign = 1 if side == "below" else -1  # lower bound: real films are above it
        weakest = min(real, key=lambda r: sign * r["features"][feature])
        refused = [c for c in corpus if sign * c["features"][feature] < sign * bound]
        closest = max(refused, key=lambda c: sign * c["features"][feature]) if refused else None
        rows.append(
            {
                "bound": f"{feature} {'>=' if side == 'below' else '<='} {bound}",
                "weakest_real": (weakest["name"], weakest["features"][feature]),
                "closest_refused_corpus": (closest["name"], closest["features"][feature]) if closest else None,
                "corpus_refused_by_this": len(refused),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aasce", type=Path, default=None, help="aasce-train folder: its images/ are the real films")
    parser.add_argument("--large", type=Path, default=None, help="folder of large full-body films (aasce-unlabelled)")
    parser.add_argument("--models", type=Path, default=REPO / "exported_models")
    parser.add_argument("--limit", type=int, default=None, help="first N AASCE films only")
    parser.add_argument("--json", type=Path, default=None, help="write every input's features here")
    parser.add_argument("--refinement", action="store_true", help="masks from the second stage (SPINE_REFINEMENT=true)")
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="as SPINE_PRECISION")
    args = parser.parse_args(argv)

    from spine_engine import ModelRegistry

    registry = ModelRegistry.load(
        args.models,
        providers=["CPUExecutionProvider"],
        warmup=False,
        precision=args.precision,
        use_refinement=args.refinement,
    )
    started = time.perf_counter()
    corpus = [gate_features(registry, item) for item in build_corpus(args.aasce)]
    real: list[dict] = []
    if args.aasce:
        real += [gate_features(registry, item) for item in real_film_inputs(args.aasce / "images", "aasce", args.limit)]
    if args.large:
        real += [gate_features(registry, item, chain_only_too=True) for item in real_film_inputs(args.large, "large")]

    for row in corpus:
        status = "PASSES" if row["ok"] else "refused by " + ", ".join(row["failed"])
        print(f"  {row['name'][:48]:48s} {status}")
    passed = [r["name"] for r in corpus if r["ok"]]
    print(f"corpus: {len(passed)} of {len(corpus)} inputs pass the gate (target 0) {passed or ''}")
    summary: dict = {"corpus_inputs": len(corpus), "corpus_passed": passed}
    for kind in ("aasce", "large"):
        films = [r for r in real if r["kind"] == kind]
        if films:
            refused = [r["name"] for r in films if not r["ok"]]
            print(f"{kind}: {len(refused)} of {len(films)} real films refused (target 0) {refused or ''}")
            summary[f"{kind}_films"] = len(films)
            summary[f"{kind}_refused"] = refused
    for row in (r for r in real if "chain_only" in r):
        chain = row["chain_only"]
        features = ", ".join(f"{k} {v:.3f}" for k, v in chain["features"].items())
        verdict = "passes" if chain["ok"] else "REFUSED by " + ", ".join(chain["failed"])
        print(f"  {row['name']} with only the chain (blobs above 20% / below 90% of the height dropped): {verdict}; {features}")
    if real:
        print("margins (weakest real film | closest corpus input on the refusing side):")
        for row in margins(corpus, real):
            closest = row["closest_refused_corpus"]
            closest_text = f"{closest[0][:32]} {closest[1]:.4f}" if closest else "-"
            print(
                f"  {row['bound']:28s} real {row['weakest_real'][1]:.4f} ({row['weakest_real'][0][:36]}) | "
                f"corpus {closest_text} | refuses {row['corpus_refused_by_this']} of {len(corpus)}"
            )
        summary["margins"] = margins(corpus, real)
    print(f"{len(corpus) + len(real)} inputs in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "corpus": corpus, "real": real}, indent=1) + "\n")
    return 1 if passed or any(summary.get(f"{k}_refused") for k in ("aasce", "large")) else 0


if __name__ == "__main__":
    sys.exit(main())
