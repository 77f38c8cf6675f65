"""SPINE_PRECISION: int8 variants listed in the manifest are served when asked for, and said so everywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from spine_service_testlib import CPU, SEG_HW, copy_models_dir, make_settings, png_bytes, spine_image, start_client

from spine_core.manifest import load_manifest, sha256_file
from spine_core.preprocessing import preprocess_image, to_unet_batch
from spine_core.structures import CLASSIFIER_MODEL_NAME
from spine_engine import ModelRegistry, Segmenter
from training.quantize import add_int8_variant

QUANTIZED = ("Ap_Vertebra", "Lat_Vertebra")


@pytest.fixture(scope="module")
def int8_models_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models, two of them with an int8 variant calibrated on generated spines."""
    out = copy_models_dir(models_dir, tmp_path_factory.mktemp("int8") / "models")
    calibration = [to_unet_batch([preprocess_image(spine_image(seed=s), SEG_HW)[0]]) for s in range(4)]
    for name in QUANTIZED:
        add_int8_variant(out, name, calibration, calibration, "generated spines")
    return out


def test_int8_file_is_a_quantized_graph_beside_the_fp32_one(int8_models_dir: Path) -> None:
    import onnx

    entry = load_manifest(int8_models_dir).by_name()["Ap_Vertebra"]
    variant = entry.variants["int8"]
    assert variant.file == "Ap_Vertebra/1/model.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(int8_models_dir / variant.file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert variant.agreement["n_images"] == 4
    assert 0.0 <= variant.agreement["max_abs_diff"] < 0.5


def test_fp32_by_default_even_with_variants(int8_models_dir: Path) -> None:
    reg = ModelRegistry.load(int8_models_dir, providers=CPU, intra_op_threads=1)
    assert reg.ready and reg.precision == "fp32"
    assert {m.precision for m in reg.models.values()} == {"fp32"}
    assert all(m.path.name == "model.onnx" for m in reg.models.values())


def test_int8_serves_the_variants_and_fp32_for_the_rest(int8_models_dir: Path) -> None:
    reg = ModelRegistry.load(int8_models_dir, providers=CPU, intra_op_threads=1, precision="int8")
    assert reg.ready, reg.problems
    for name, model in reg.models.items():
        expected = "int8" if name in QUANTIZED else "fp32"
        assert model.precision == expected, name
        assert model.sha256 == sha256_file(model.path)
    assert reg.models[CLASSIFIER_MODEL_NAME].path.name == "model.onnx"
    fp32 = ModelRegistry.load(int8_models_dir, providers=CPU, intra_op_threads=1)
    image = spine_image(300, 120, seed=7)
    a = Segmenter(fp32).segment(image, "AP", ["Ap_Vertebra"]).masks["Ap_Vertebra"]
    b = Segmenter(reg).segment(image, "AP", ["Ap_Vertebra"]).masks["Ap_Vertebra"]
    assert a.shape == b.shape and a.any()
    assert np.mean(a == b) > 0.95  # the same model, other arithmetic


def test_a_tampered_variant_is_reported_not_served(int8_models_dir: Path, tmp_path: Path) -> None:
    models = copy_models_dir(int8_models_dir, tmp_path / "m")
    variant_file = models / "Ap_Vertebra/1/model.int8.onnx"
    variant_file.write_bytes(variant_file.read_bytes() + b"\0")
    reg = ModelRegistry.load(models, providers=CPU, intra_op_threads=1, precision="int8")
    assert not reg.ready
    assert "model.int8.onnx" in reg.problems["Ap_Vertebra"] and "sha256" in reg.problems["Ap_Vertebra"]
    # fp32 does not read the variant at all
    assert ModelRegistry.load(models, providers=CPU, intra_op_threads=1).ready


def test_unknown_precision_is_refused(int8_models_dir: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        ModelRegistry.load(int8_models_dir, providers=CPU, precision="fp16")


def test_manifest_without_variants_still_loads(models_dir: Path, tmp_path: Path) -> None:
    # manifests written before variants existed have no "variants" key
    models = copy_models_dir(models_dir, tmp_path / "m")
    data = json.loads((models / "manifest.json").read_text())
    for m in data["models"]:
        m.pop("variants", None)
    (models / "manifest.json").write_text(json.dumps(data))
    reg = ModelRegistry.load(models, providers=CPU, intra_op_threads=1, precision="int8")
    assert reg.ready and {m.precision for m in reg.models.values()} == {"fp32"}


@pytest.fixture(scope="module")
def int8_client(int8_models_dir: Path) -> Iterator[TestClient]:
    client = start_client(make_settings(int8_models_dir, precision="int8"))
    yield client
    client.__exit__(None, None, None)


def test_models_route_says_what_runs(int8_client: TestClient) -> None:
    body = int8_client.get("/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["Ap_Vertebra"]["precision"] == "int8"
    assert by_name["Ap_Vertebra"]["variants"]["int8"]["file"] == "Ap_Vertebra/1/model.int8.onnx"
    assert by_name["Ap_Pedicle"]["precision"] == "fp32"
    assert by_name[CLASSIFIER_MODEL_NAME]["precision"] == "fp32"


def test_segment_response_names_the_file_served(int8_client: TestClient, int8_models_dir: Path) -> None:
    r = int8_client.post("/segment", files={"file": ("x.png", png_bytes(), "image/png")}, data={"view": "AP"})
    assert r.status_code == 200, r.text
    refs = {m["name"]: m for m in r.json()["models"]}
    variant = load_manifest(int8_models_dir).by_name()["Ap_Vertebra"].variants["int8"]
    assert refs["Ap_Vertebra"]["precision"] == "int8" and refs["Ap_Vertebra"]["sha256"] == variant.sha256
    assert refs["Ap_Pedicle"]["precision"] == "fp32"


def test_precision_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    from pydantic import ValidationError

    from service.core.config import Settings

    monkeypatch.setenv("SPINE_PRECISION", "int8")
    assert Settings(_env_file=None).precision == "int8"
    monkeypatch.setenv("SPINE_PRECISION", "fp16")
    with pytest.raises(ValidationError, match="precision"):
        Settings(_env_file=None)
