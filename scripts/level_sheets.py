"""Sheets for reading T1 and L5 by eye: the vertebral bodies the landmark model sees, numbered, no level shown.

    python scripts/level_sheets.py ../shared/data/aasce-unlabelled --out /tmp/sheets [--models exported_models]
        [--only 01-July-2019-6.jpg ...]

For each film (PNG, JPEG or DICOM), the landmark model reads it as the service does (`read_vertebrae`: a second
pass on a window on full-body films), and the chain of bodies it found on the pass it kept (`find_chain`: every
body down the spine, cervical and sacral ones included, before the 17 levels are placed) is drawn on the film and
numbered top to bottom. Three PNGs a film (and STEM_boxes.json, the numbered bodies' corners): STEM_top.png (the
neck and upper thorax: the first rib), STEM_bottom.png (the lumbar spine and the sacrum), STEM_overview.png (the
whole film). A reader names the boxes of T1 and L5 (the check: 17 bodies from one to the other); `docs/fov.md` says
how the marks in `docs/fov/large_film_marks.json` were made this way. The levels are not shown so that the reading
is not the model's answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(REPO))

from spine_core.landmark_reader import frame_to_source, read_vertebrae  # noqa: E402
from spine_core.landmarks import find_chain  # noqa: E402
from spine_engine.decoding import decode_image  # noqa: E402
from spine_engine.registry import ModelRegistry  # noqa: E402

SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
SHEET_PX = 1100  # the longer side of a sheet


def chain_boxes(registry: ModelRegistry, pixels: np.ndarray) -> np.ndarray | None:
    """(k, 4, 2) corners in film pixels of the bodies on the chain of the pass the service keeps (None: none)."""
    model = registry.landmark_model()
    if model is None:
        raise SystemExit("the manifest has no landmark model")

    def run(batch: np.ndarray) -> np.ndarray:
        return registry.infer([(model, batch)])[0]

    reading = read_vertebrae(run, pixels, out_hw=tuple(model.input_hw))
    chain = find_chain(reading.heads) if reading.heads is not None else None
    return None if chain is None else frame_to_source(chain.corners, reading.frame)


def boxes_file(sheets: Path, film: str) -> Path:
    """Where the numbered bodies' corners of `film` (a name or stem) are written beside its sheets."""
    return sheets / f"{Path(film).stem}_boxes.json"


def read_boxes(sheets: Path, film: str) -> np.ndarray:
    """(k, 4, 2) the numbered bodies' corners (film pixels, TL TR BL BR) written beside `film`'s sheets."""
    return np.asarray(json.loads(boxes_file(sheets, film).read_text()), dtype=np.float64)


def draw_sheets(pixels: np.ndarray, boxes: np.ndarray, out: Path, stem: str) -> None:
    gray = pixels if pixels.ndim == 2 else pixels[..., :3].mean(axis=2)
    lo, hi = np.percentile(gray, (1, 99))
    image = Image.fromarray(np.clip((gray - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8))
    image = ImageOps.autocontrast(image).convert("RGB")
    draw = ImageDraw.Draw(image)
    font_px = max(12, round(image.height / 110))
    for i, quad in enumerate(boxes):
        draw.polygon([tuple(quad[k]) for k in (0, 1, 3, 2)], outline=(255, 0, 0) if i % 2 else (0, 255, 0), width=3)
        draw.text(tuple(quad[1] + [font_px / 3, -font_px / 3]), str(i), fill=(255, 255, 0), font_size=font_px)
    ys, xs = boxes[..., 1], boxes[..., 0]
    pitch = float(np.median(np.diff(boxes.mean(axis=1)[:, 1]))) if len(boxes) > 1 else 100.0

    def save(first: int, last: int, name: str) -> None:
        y0, y1 = ys[first : last + 1].min() - 1.2 * pitch, ys[first : last + 1].max() + 1.2 * pitch
        cx, half = float(np.median(xs[first : last + 1])), max(0.65 * (y1 - y0), 5 * pitch)
        crop = image.crop((round(cx - half), round(y0), round(cx + half), round(y1)))
        scale = SHEET_PX / max(crop.size)
        crop.resize((round(crop.width * scale), round(crop.height * scale))).save(out / f"{stem}_{name}.png")

    n = len(boxes)
    save(0, min(6, n - 1), "top")
    save(max(0, n - 10), n - 1, "bottom")
    scale = SHEET_PX / image.height
    image.resize((max(1, round(image.width * scale)), SHEET_PX)).save(out / f"{stem}_overview.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=REPO / "exported_models")
    parser.add_argument("--only", nargs="*", default=None, help="film names (default: every film in the folder)")
    args = parser.parse_args(argv)
    registry = ModelRegistry.load(args.models, providers=["CPUExecutionProvider"], warmup=False)
    args.out.mkdir(parents=True, exist_ok=True)
    films = sorted(p for p in args.films_dir.iterdir() if p.suffix.lower() in SUFFIXES)
    for path in films if args.only is None else [p for p in films if p.name in args.only]:
        pixels = decode_image(path.read_bytes(), max_pixels=10**9, filename=path.name).pixels
        boxes = chain_boxes(registry, pixels)
        if boxes is None:
            print(path.name, "no chain of vertebrae seen: no sheet")
            continue
        draw_sheets(pixels, boxes, args.out, path.stem)
        # The numbered bodies' corners (film pixels, TL TR BL BR), so that a reader's box numbers become marks.
        boxes_file(args.out, path.name).write_text(json.dumps(np.round(boxes, 1).tolist()))
        print(path.name, f"{len(boxes)} bodies numbered 0..{len(boxes) - 1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
