"""The image's install step: the `serve` extra resolves for the image's interpreter (CPython 3.12 on
Ubuntu 24.04, manylinux wheels) with onnxruntime-gpu and without TensorFlow, and the onnxruntime-gpu
release matches the CUDA / cuDNN of docker/Dockerfile's base image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# What the Dockerfile's builder stage copies before `pip install '.[serve]'`.
BUILD_INPUTS = ["pyproject.toml", "README.md", "spine_core", "service"]
IMAGE_PYTHON = "3.12"  # Ubuntu 24.04's python3, the one the CUDA base image's apt installs
IMAGE_PLATFORMS = ["manylinux_2_39_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
FORBIDDEN = re.compile(r"^(tensorflow.*|tf-.*|keras|tf2onnx|jax.*|torch.*)$")


def labels() -> dict[str, str]:
    return dict(re.findall(r'io\.spine-xray\.([\w-]+)="([^"]+)"', DOCKERFILE.read_text()))


def test_dockerfile_labels_state_the_pairing():
    found = labels()
    assert set(found) >= {"cuda", "cudnn", "onnxruntime-gpu"}
    assert f"nvidia/cuda:{found['cuda']}-cudnn-runtime" in DOCKERFILE.read_text()
    assert found["cudnn"] == "9"


def test_installed_onnxruntime_gpu_is_built_for_the_image_cuda():
    """The wheel itself says which CUDA it was built for and which cuDNN major it wants."""
    try:
        dist = metadata.distribution("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        pytest.skip("onnxruntime-gpu is not installed here (serve extra)")
    found = labels()
    assert dist.version.startswith(found["onnxruntime-gpu"] + "."), (
        f"installed onnxruntime-gpu {dist.version}, docker/Dockerfile is labelled for {found['onnxruntime-gpu']}: "
        "check its CUDA/cuDNN needs and update the base image and labels together"
    )
    info = next(f for f in dist.files if f.name == "build_and_package_info.py")
    built_cuda = re.search(r"cuda_version\s*=\s*'([\d.]+)'", info.read_text()).group(1)
    assert built_cuda.split(".")[0] == found["cuda"].split(".")[0], (
        f"wheel built for CUDA {built_cuda}, image has {found['cuda']}"
    )
    cudnn_reqs = [r for r in dist.requires or [] if r.startswith("nvidia-cudnn")]
    assert cudnn_reqs, "onnxruntime-gpu no longer declares its cuDNN (extra 'cudnn'); check the pairing by hand"
    m = re.match(r"nvidia-cudnn-cu(\d+)\s*~=\s*(\d+)", cudnn_reqs[0])
    assert m, cudnn_reqs[0]
    assert m.group(1) == found["cuda"].split(".")[0] and m.group(2) == found["cudnn"], cudnn_reqs[0]


def pypi_reachable() -> str | None:
    """None when pip can reach its index, else why not."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "index", "versions", "onnxruntime-gpu", "--disable-pip-version-check"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return "pip index timed out after 60 s"
    if proc.returncode != 0 or "Available versions" not in proc.stdout:
        return "pip cannot reach PyPI: " + (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return None


@pytest.mark.network
def test_serve_extra_resolves_for_the_image(tmp_path):
    reason = pypi_reachable()
    if reason:
        pytest.skip(reason)
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, src / name)
    report = tmp_path / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--disable-pip-version-check",
        "--report",
        str(report),
        "--only-binary=:all:",
        "--python-version",
        IMAGE_PYTHON,
        "--implementation",
        "cp",
    ]
    for platform in IMAGE_PLATFORMS:
        cmd += ["--platform", platform]
    proc = subprocess.run([*cmd, f"{src}[serve]"], capture_output=True, text=True, timeout=540, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    resolved = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "onnxruntime-gpu" in resolved and "spine-xray" in resolved
    assert "onnxruntime" not in resolved, "the CPU-only onnxruntime must not come along (it shadows the GPU build)"
    assert resolved["onnxruntime-gpu"].startswith(labels()["onnxruntime-gpu"] + "."), (
        f"the serve extra resolves onnxruntime-gpu {resolved['onnxruntime-gpu']}, the image's CUDA base is for "
        f"{labels()['onnxruntime-gpu']}.x: pin the serve extra or move the base image"
    )
    heavy = sorted(name for name in resolved if FORBIDDEN.match(name))
    assert not heavy, f"the serving image would install {heavy}"
    assert {"fastapi", "uvicorn", "numpy", "pillow", "pydantic-settings"} <= set(resolved)
