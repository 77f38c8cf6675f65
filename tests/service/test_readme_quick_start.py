"""The README's Quick start, run as written against a live uvicorn serving the committed models.

Each ```bash block of the section is a list of commands (lines starting with `curl`, `python3` or `.venv/bin/python`),
each followed by the start of its answer. The test runs every command with bash in a scratch folder (where
`docs/` points at the checkout's), `localhost:8000` replaced by the live server's address, and checks that its
output starts with the answer shown: the same text, numbers within 2 % (another CPU or a GPU rounds differently),
and `…` ending the part shown.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from spine_service_testlib import make_settings, serve_live

from service.core.config import DEFAULT_MODELS_DIR
from spine_engine import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
COMMAND_STARTS = ("curl ", "python3 ", ".venv/bin/python ")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
ELLIPSIS = "…"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (DEFAULT_MODELS_DIR / "manifest.json").is_file(), reason="exported_models/ is not committed"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (.ci/run installs it)"),
]


@dataclass
class Call:
    command: str
    expected: str  # the answer's start as the README shows it; ends with … when cut


def quick_start_section(text: str) -> str:
    start = text.index("\n## Quick start\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def quick_start_calls(text: str) -> list[Call]:
    calls: list[Call] = []
    for block in re.findall(r"```bash\n(.*?)```", quick_start_section(text), flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith(COMMAND_STARTS):
                calls.append(Call(line, ""))
            elif line.strip() and not line.startswith("#"):
                assert calls, f"an answer line before any command: {line!r}"
                calls[-1].expected += ("\n" if calls[-1].expected else "") + line
    return calls


def _tokens(text: str) -> list[str]:
    """Numbers and the text between them."""
    return [t for t in re.split(f"({NUMBER.pattern})", text) if t]


def _same_number(shown: str, actual: str) -> bool:
    a, b = float(shown), float(actual)
    return abs(a - b) <= max(0.02 * abs(a), 1e-3)


def starts_like(actual: str, expected: str) -> bool:
    """Does `actual` begin as `expected` shows (numbers approximately; a cut last token as a prefix)?"""
    cut = expected.endswith(ELLIPSIS)
    shown = _tokens(expected.removesuffix(ELLIPSIS))
    real = _tokens(actual)
    if len(real) < len(shown):
        return False
    for i, (s, r) in enumerate(zip(shown, real, strict=False)):
        last = i == len(shown) - 1
        if NUMBER.fullmatch(s) and NUMBER.fullmatch(r):
            if not _same_number(s, r):
                return False
        elif not (r == s or (cut and last and r.startswith(s))):
            return False
    return cut or len(real) == len(shown)


def test_the_parser_reads_commands_and_answers_and_the_comparison_can_fail() -> None:
    text = 'x\n## Quick start\n```bash\ncurl -s a\n{"a":1.00,…\n# note\ncurl -s b\nok\n```\n## Next\n```bash\ncurl c\n```\n'
    assert quick_start_calls(text) == [Call("curl -s a", '{"a":1.00,…'), Call("curl -s b", "ok")]
    assert starts_like('{"a":1.001,"b":2}', '{"a":1.00,…')
    assert not starts_like('{"a":1.5,"b":2}', '{"a":1.00,…')
    assert not starts_like('{"b":1.00}', '{"a":1.00,…')
    assert not starts_like("ok then", "ok")  # not cut: the whole answer must match


@pytest.fixture(scope="module")
def committed_server(committed_registry: ModelRegistry) -> Iterator[str]:
    with serve_live(make_settings(DEFAULT_MODELS_DIR), committed_registry) as address:
        yield address


def test_every_quick_start_call_answers_as_the_readme_shows(committed_server: str, tmp_path: Path) -> None:
    calls = quick_start_calls(README.read_text(encoding="utf-8"))
    services = {"/classify", "/segment", "/dicom/seg", "/dicom/sr", "/infer", "/health/ready"}
    assert all(any(route in c.command for c in calls) for route in services), "a Quick start call is missing"
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    for call in calls:
        assert call.expected, f"no answer shown after {call.command!r}"
        command = call.command.replace("localhost:8000", committed_server).replace(".venv/bin/python", sys.executable)
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{call.command}\nexit {done.returncode}: {done.stderr}"
        real = done.stdout.strip()
        assert starts_like(real, call.expected), f"{call.command}\nREADME: {call.expected}\nreal:   {real[:400]}"


def test_the_example_film_is_measured_and_its_answer_is_complete(committed_server: str) -> None:
    """The shipped film reads as a spine with an angle; each curve says whether it is reliable; the organisers' order."""
    import httpx

    film = (ROOT / "docs" / "examples" / "synthetic_ap.jpg").read_bytes()
    r = httpx.post(f"http://{committed_server}/segment", files={"file": ("ap.jpg", film)}, data={"view": "AP"}, timeout=120)
    assert r.status_code == 200, r.text
    cobb = r.json()["cobb"]
    assert cobb is not None and len(r.json()["vertebrae"]) == 17
    assert sorted(cobb["aasce_angles_deg"]) == sorted(cobb["angles_deg"]) and cobb["aasce_angles_deg"][0] == cobb["max_deg"]
    for curve in cobb["curves"]:
        assert curve["reliable"] is (curve["end_confidence"] >= 0.8), curve
    assert cobb["reliable"] is cobb["curves"][0]["reliable"]
