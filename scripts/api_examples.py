"""Real responses of the committed models, for the README and the OpenAPI document (they cannot drift).

    python scripts/api_examples.py ../shared/data/aasce-train/images/<film>.jpg [--models exported_models]

Sends the film (and a blank image, and the film as a LAT-only study) through the app in process with the
default settings, shortens what is long (mask data, the manifest), and writes `service/api_examples.json`
(the examples `/docs` shows) and the README's example blocks (between `<!-- example: NAME -->` markers).
tests/service/test_api_examples.py checks both against each other and against the committed manifest,
and, where ../shared is present, against a fresh run.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from service.core.config import DEFAULT_MODELS_DIR, Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_FILE = ROOT / "service" / "api_examples.json"
README = ROOT / "README.md"
# A block's body never holds a marker, so one block cannot swallow the next.
BLOCK = re.compile(r"(<!-- example: (?P<name>[a-z_]+) -->\n```json\n)(?P<body>(?:(?!<!--).)*?)(\n```\n<!-- /example -->)", re.S)
MODEL_KEYS = ("name", "kind", "structure", "view", "version", "validated", "training_data", "ready", "provider")


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1200, 500), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _shorten(body: Any) -> Any:
    """Mask data and long lists cut to a few items: the README shows shapes and values, not megabytes."""
    if isinstance(body, dict):
        out = {}
        for key, value in body.items():
            if key == "counts" and isinstance(value, list):
                out[key] = value[:6]
            elif key == "data" and isinstance(value, str):
                out[key] = value[:24]
            elif key == "vertebrae" and isinstance(value, list):
                out[key] = [_shorten(v) for v in value[:2]]
            elif key in ("request_id",):
                continue
            else:
                out[key] = _shorten(value)
        return out
    if isinstance(body, list):
        return [_shorten(v) for v in body]
    return body


def generate(film: Path, models_dir: Path) -> dict[str, Any]:
    settings = Settings(_env_file=None, models_dir=models_dir, providers=["CPUExecutionProvider"], warmup=True, log_json=False)
    app = create_app(settings)
    data = film.read_bytes()
    with TestClient(app) as client:
        if not app.state.models.wait(300):
            raise SystemExit("the models did not load")
        models = client.get("/models").json()
        models["models"] = [{k: m.get(k) for k in MODEL_KEYS} for m in models["models"]]
        segment = client.post("/segment", files={"file": (film.name, data)}, data={"view": "AP", "mask_format": "rle"}).json()
        classify = client.post("/classify", files={"ap": (film.name, data)}, data={"include_masks": "false"}).json()
        lat_only = client.post("/classify", files={"lat": (film.name, data)})
        blank = client.post("/classify", files={"ap": ("blank.png", _blank_png())})
    return {
        "_source": {"film": film.name, "models_dir": "exported_models", "generated_by": "scripts/api_examples.py"},
        "models": _shorten(models),
        "segment": _shorten(segment),
        "classify": _shorten(classify),
        "classify_lat_only": {"status": lat_only.status_code, **_shorten(lat_only.json())},
        "classify_blank": {"status": blank.status_code, **_shorten(blank.json())},
    }


def render(example: dict[str, Any]) -> str:
    """One top-level field a line (a list of objects: one object a line), so a README reader can scan it."""
    lines = []
    for key, value in example.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"   {json.dumps(v)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}"


def write_readme(examples: dict[str, Any], readme: Path = README) -> None:
    text = readme.read_text()
    names = [m.group("name") for m in BLOCK.finditer(text)]
    missing = [n for n in names if n not in examples]
    if missing:
        raise SystemExit(f"README has example blocks with no example: {missing}")
    readme.write_text(BLOCK.sub(lambda m: m.group(1) + render(examples[m.group("name")]) + m.group(4), text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("film", type=Path, help="an AP spine film (JPEG/PNG/DICOM)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    args = parser.parse_args(argv)
    examples = generate(args.film, args.models)
    EXAMPLES_FILE.write_text(json.dumps(examples, indent=1) + "\n")
    write_readme(examples)
    print(f"wrote {EXAMPLES_FILE.relative_to(ROOT)} and the README's example blocks", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
