"""The layering is a checked contract (pyproject.toml [tool.importlinter], also run by `make test`).

Here as a test too, so `pytest` alone catches an import across the layers; plus the one thing a static
graph cannot see: what importing the inference layer actually loads (third-party imports included).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import service.main

# service.main, not service: an editable install made before service/__init__.py existed maps `service` as a namespace.
REPO = Path(service.main.__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"  # the dev extra installs it beside this python
    assert lint_imports.is_file(), "import-linter is not installed (pip install -e '.[dev]')"
    out = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_inference_layer_imports_no_web_framework() -> None:
    code = (
        "import sys, spine_engine, spine_engine.study, spine_engine.answers, spine_engine.engine, spine_engine.pacs\n"
        "frameworks = ('fastapi', 'starlette', 'uvicorn', 'httpx', 'ray', 'tensorflow', 'keras')\n"
        "bad = [m for m in (*frameworks, 'service', 'spine_batch', 'training') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
