"""Sheets for reading a full-body film's spine centreline by eye: the film alone, rows to read, a pixel grid.

    python scripts/centreline_sheets.py ../shared/data/aasce-unlabelled --out /tmp/cl [--rows 9]
        [--marks docs/fov/large_film_marks.json] [--only 01-July-2019-6.jpg ...]
    python scripts/centreline_sheets.py ../shared/data/aasce-unlabelled --out /tmp/cl --apply /tmp/cl/reader*.json

The corridor score of `scripts/fov_check.py` and `scripts/levels_check.py` is taken around the marked centreline,
so a centreline off the vertebral bodies scores a right mask as wrong. For each marked film this draws, between the
marked T1 top and L5 bottom, `--rows` evenly spaced rows (R1 at the top) on the contrast-stretched film, with x ticks
in the film's own pixels, in two halves (STEM_upper.png, STEM_lower.png: zoomed so that a body is wide enough to
read) and writes STEM_rows.json (the rows' y). A reader gives, per row, the x of the middle of the vertebral body
column there (between the bodies' lateral borders; of the disc where the row meets one). Nothing of a model is shown,
so the reading is not the model's answer; `docs/fov.md` says how the audit of 2026-12-05 used these sheets.

`--apply` writes the readers' answers into the marks: per film the rows' x (the mean where several readers read it)
become its `centreline`, the earlier one is kept as `centreline_first_pass`, and each reader's x and confidence per
row as `centreline_reading`. A reader's answer: {"reader": N, "films": {NAME: {"R1": [x, "high"|"medium"|"low"],
...}}, "notes": {NAME: "..."}}. It prints how far two readers of one film lie apart.
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

from spine_engine.decoding import decode_image  # noqa: E402
from spine_engine.overlay import display_gray  # noqa: E402

SHEET_ROWS_PX = 1000  # the height of one half on the sheet
MARGIN = 0.06  # the share of the T1-L5 height shown above T1 and below L5


def stretched(path: Path) -> Image.Image:
    """The film decoded as the service decodes it (PNG, JPEG or DICOM), in the viewer's display contrast."""
    return Image.fromarray(display_gray(decode_image(path.read_bytes(), max_pixels=10**9, filename=path.name).pixels))


def reading_rows(film: dict, n_rows: int) -> list[int]:
    """`n_rows` rows evenly spaced strictly between the marked T1 top and L5 bottom."""
    top, bottom = film["t1_top"][1], film["l5_bottom"][1]
    return [round(top + (bottom - top) * (k + 1) / (n_rows + 1)) for k in range(n_rows)]


def half_sheet(image: Image.Image, y0: int, y1: int, rows: dict[str, int]) -> Image.Image:
    """The film's rows y0..y1, scaled to `SHEET_ROWS_PX` tall, with the reading rows and x ticks drawn."""
    crop = image.crop((0, y0, image.width, y1))
    scale = SHEET_ROWS_PX / crop.height
    shown = ImageOps.equalize(crop).resize((max(1, round(crop.width * scale)), SHEET_ROWS_PX)).convert("RGB")
    pad = 40
    sheet = Image.new("RGB", (shown.width + 2 * pad, shown.height + 2 * pad), "black")
    sheet.paste(shown, (pad, pad))
    draw = ImageDraw.Draw(sheet)
    step = 100 if image.width > 1200 else 25  # x ticks in the film's pixels
    for x in range(0, image.width + 1, step):
        sx = pad + x * scale
        major = x % (step * 2) == 0
        draw.line([(sx, pad - (12 if major else 6)), (sx, pad)], fill="cyan")
        draw.line([(sx, pad + shown.height), (sx, pad + shown.height + (12 if major else 6))], fill="cyan")
        if major:
            draw.text((sx + 2, 2), str(x), fill="cyan")
            draw.text((sx + 2, pad + shown.height + 14), str(x), fill="cyan")
    for name, y in rows.items():
        if y0 <= y < y1:
            sy = pad + (y - y0) * scale
            draw.line([(pad, sy), (pad + shown.width, sy)], fill="yellow", width=1)
            draw.text((2, sy - 6), name, fill="yellow")
            draw.text((pad + shown.width + 2, sy - 6), name, fill="yellow")
    return sheet


def write_sheets(path: Path, film: dict, out: Path, n_rows: int) -> None:
    image = stretched(path)
    rows = {f"R{k + 1}": y for k, y in enumerate(reading_rows(film, n_rows))}
    top, bottom = film["t1_top"][1], film["l5_bottom"][1]
    margin = round(MARGIN * (bottom - top))
    middle = (top + bottom) // 2
    y_top, y_bottom = max(0, top - margin), min(image.height, bottom + margin)
    # The halves overlap by a margin, so a row near the middle is on both.
    half_sheet(image, y_top, min(image.height, middle + margin), rows).save(out / f"{path.stem}_upper.png")
    half_sheet(image, max(0, middle - margin), y_bottom, rows).save(out / f"{path.stem}_lower.png")
    (out / f"{path.stem}_rows.json").write_text(json.dumps({"film": path.name, "width": image.width, "rows": rows}, indent=1))


def marks_json(value: object, indent: int = 0) -> str:
    """The marks file's layout: objects one key a line (two spaces a level) unless short and flat, lists on one line."""
    pad = "  " * (indent + 1)
    nested = isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values())
    if isinstance(value, dict) and value and (nested or len(json.dumps(value)) > 100):
        body = ",\n".join(f"{pad}{json.dumps(k)}: {marks_json(v, indent + 1)}" for k, v in value.items())
        return "{\n" + body + "\n" + "  " * indent + "}"
    return json.dumps(value, ensure_ascii=False)


def apply_readings(marks: dict, readings: list[dict], rows_y: dict[str, list[int]] | None = None) -> dict[str, list[float]]:
    """The readers' rows written into `marks["films"]` (in place); per film read twice or more, the readers' largest
    x difference at each row (film pixels). `rows_y`: the rows' y as the sheets drew them (STEM_rows.json), which
    T1 or L5 marks moved since would no longer give."""
    by_film: dict[str, list[tuple[int, dict, str]]] = {}
    for reading in readings:
        for name, rows in reading["films"].items():
            by_film.setdefault(name, []).append((reading["reader"], rows, reading.get("notes", {}).get(name, "")))
    spread: dict[str, list[float]] = {}
    for name, answers in sorted(by_film.items()):
        film = marks["films"][name]
        n_rows = len(answers[0][1])
        ys = (rows_y or {}).get(name) or reading_rows(film, n_rows)
        xs = np.array([[float(rows[f"R{k + 1}"][0]) for k in range(n_rows)] for _, rows, _ in answers])
        film.setdefault("centreline_first_pass", film["centreline"])
        film["centreline"] = [[round(float(x)), y] for x, y in zip(xs.mean(axis=0), ys, strict=True)]
        film["centreline_reading"] = {
            f"reader {reader}": {
                "rows_x": [rows[f"R{k + 1}"][0] for k in range(n_rows)],
                "confidence": [rows[f"R{k + 1}"][1] for k in range(n_rows)],
                "note": note,
            }
            for reader, rows, note in answers
        }
        if len(answers) > 1:
            spread[name] = list(np.ptp(xs, axis=0))
    return spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("films_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder for the sheets")
    parser.add_argument("--apply", type=Path, nargs="*", default=None, help="readers' answers to write into --marks")
    parser.add_argument("--marks", type=Path, default=REPO / "docs" / "fov" / "large_film_marks.json")
    parser.add_argument("--rows", type=int, default=9)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    if args.apply:
        marks = json.loads(args.marks.read_text())
        drawn = {}  # the rows as the sheets in --out drew them, where they are there
        for path in args.out.glob("*_rows.json") if args.out else []:
            sheet = json.loads(path.read_text())
            drawn[sheet["film"]] = [int(y) for y in sheet["rows"].values()]
        spread = apply_readings(marks, [json.loads(path.read_text()) for path in args.apply], drawn)
        args.marks.write_text(marks_json(marks) + "\n")
        for name, rows in spread.items():
            print(name, "readers apart (px):", [round(x) for x in rows])
        return
    if args.out is None:
        parser.error("--out is needed to draw sheets")
    marks = json.loads(args.marks.read_text())["films"]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, film in marks.items():
        if (args.only is None or name in args.only) and film.get("kind") != "not_ap_spine":
            write_sheets(args.films_dir / name, film, args.out, args.rows)
            print(name)


if __name__ == "__main__":
    main()
