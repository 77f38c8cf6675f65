"""The inference layer is imported by the evaluation CLI: no web framework; nothing in service/ imports TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import service.main

# service.main, not service: an editable install made before service/__init__.py existed maps `service` as a namespace.
SERVICE_DIR = Path(service.main.__file__).parent


def test_inference_layer_imports_no_web_framework() -> None:
    code = (
        "import sys, service.inference\n"
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'tensorflow', 'keras') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_tensorflow_or_keras_import_anywhere_in_service() -> None:
    offenders = []
    for path in SERVICE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "training")]
    assert offenders == []
