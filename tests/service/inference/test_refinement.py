"""Two-stage segmentation: a refinement model re-segments a window around the first stage's mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from spine_service_testlib import (
    CPU,
    REFINE_HW,
    add_refinement_model,
    copy_models_dir,
    make_settings,
    png_bytes,
    spine_image,
    start_client,
)

from spine_core.preprocessing import (
    CropBox,
    crop_probabilities_to_letterbox,
    crop_probabilities_to_source,
    letterbox_probabilities_to_crop,
    preprocess_crop,
    preprocess_image,
    to_unet_batch,
)
from spine_engine import ModelRegistry, Segmenter


@pytest.fixture(scope="module")
def refined_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = copy_models_dir(models_dir, tmp_path_factory.mktemp("refine") / "models")
    add_refinement_model(out)
    return out


@pytest.fixture(scope="module")
def refined(refined_dir: Path) -> ModelRegistry:
    return ModelRegistry.load(refined_dir, providers=CPU, intra_op_threads=1, use_refinement=True)


def test_refinement_is_opt_in(refined_dir: Path) -> None:
    default = ModelRegistry.load(refined_dir, providers=CPU, intra_op_threads=1)
    assert default.ready and default.refinement_model("Ap_Vertebra") is None
    assert Segmenter(default).segment(spine_image(), "AP", ["Ap_Vertebra"]).refined == []


def test_refinement_model_loads_but_is_not_a_structure(refined: ModelRegistry) -> None:
    assert refined.ready, refined.problems
    assert refined.refinement_model("Ap_Vertebra").name == "Ap_Vertebra_refine"
    assert refined.refinement_model("Ap_Pedicle") is None
    # Served under the structure it refines: the AP structures are unchanged.
    assert refined.structures_for("AP") == ["Ap_Pedicle", "Ap_Spinous_Process", "Ap_Vertebra"]


def test_mask_comes_from_the_window_the_first_stage_places(refined: ModelRegistry, refined_dir: Path) -> None:
    image = spine_image(300, 120, seed=3)
    first = ModelRegistry.load(refined_dir, providers=CPU, intra_op_threads=1, use_refinement=False)
    coarse = Segmenter(first).segment(image, "AP", ["Ap_Vertebra"])
    result = Segmenter(refined).segment(image, "AP", ["Ap_Vertebra"])
    assert result.refined == ["Ap_Vertebra"] and coarse.refined == []
    assert result.models_used == ["Ap_Vertebra", "Ap_Vertebra_refine"]
    assert "refinement" in result.timings_ms and "refinement" not in coarse.timings_ms

    # The same two steps by hand: window from the first-stage source mask, the refinement graph, mapped back.
    box = CropBox.around_mask(coarse.masks["Ap_Vertebra"], REFINE_HW)
    assert box is not None
    session = ort.InferenceSession(str(refined_dir / "Ap_Vertebra_refine/1/model.onnx"), providers=CPU)
    probs = session.run(None, {"input_image": to_unet_batch([preprocess_crop(image, box)])})[0][0, :, :, 0]
    assert result.masks["Ap_Vertebra"].any()
    assert np.array_equal(result.masks["Ap_Vertebra"], crop_probabilities_to_source(probs, box) >= 0.5)
    expected_frame = crop_probabilities_to_letterbox(probs, box, coarse.letterbox) >= 0.5
    assert np.array_equal(result.model_frame_masks["Ap_Vertebra"], expected_frame)
    # ... and it is not the first stage's mask (the tiny refiner thresholds at another level).
    assert not np.array_equal(result.masks["Ap_Vertebra"], coarse.masks["Ap_Vertebra"])


def test_combine_mean_averages_the_two_stages_in_the_window(refined_dir: Path, tmp_path: Path) -> None:
    from spine_core.manifest import load_manifest, save_manifest

    out = copy_models_dir(refined_dir, tmp_path / "models")
    manifest = load_manifest(out)
    for entry in manifest.models:
        if entry.kind == "refinement":
            entry.combine = "mean"
    save_manifest(manifest, out)
    image = spine_image(300, 120, seed=3)
    first = ModelRegistry.load(out, providers=CPU, intra_op_threads=1, use_refinement=False)
    coarse = Segmenter(first).segment(image, "AP", ["Ap_Vertebra"])
    frame_probs = first.models["Ap_Vertebra"].session.run(
        None, {"input_image": to_unet_batch([preprocess_image(image, first.models["Ap_Vertebra"].input_hw)[0]])}
    )[0][0, :, :, 0]
    two_stage = ModelRegistry.load(out, providers=CPU, intra_op_threads=1, use_refinement=True)
    result = Segmenter(two_stage).segment(image, "AP", ["Ap_Vertebra"])
    box = CropBox.around_mask(coarse.masks["Ap_Vertebra"], REFINE_HW)
    session = ort.InferenceSession(str(out / "Ap_Vertebra_refine/1/model.onnx"), providers=CPU)
    second = session.run(None, {"input_image": to_unet_batch([preprocess_crop(image, box)])})[0][0, :, :, 0]
    mean = (second + letterbox_probabilities_to_crop(frame_probs, coarse.letterbox, box)) / 2
    assert result.refined == ["Ap_Vertebra"]
    assert np.array_equal(result.masks["Ap_Vertebra"], crop_probabilities_to_source(mean, box) >= 0.5)
    # ... which is neither stage alone.
    assert not np.array_equal(result.masks["Ap_Vertebra"], crop_probabilities_to_source(second, box) >= 0.5)


def test_other_structures_and_views_are_untouched(refined: ModelRegistry, refined_dir: Path) -> None:
    first = ModelRegistry.load(refined_dir, providers=CPU, intra_op_threads=1, use_refinement=False)
    work = [(spine_image(300, 120, seed=4), "AP", None), (spine_image(280, 140, seed=5), "LAT", None)]
    two_stage, one_stage = Segmenter(refined).segment_many(work), Segmenter(first).segment_many(work)
    assert two_stage[0].refined == ["Ap_Vertebra"] and two_stage[1].refined == []
    for a, b in zip(two_stage, one_stage, strict=True):
        for structure in a.masks:
            if structure not in a.refined:
                assert np.array_equal(a.masks[structure], b.masks[structure]), structure


def test_label_only_path_refines_the_frame_masks_too(refined: ModelRegistry) -> None:
    work = [(spine_image(300, 120, seed=6), "AP", ["Ap_Vertebra"])]
    full, frames_only = Segmenter(refined).segment_many(work)[0], Segmenter(refined).segment_many(work, source_masks=False)[0]
    assert frames_only.masks == {} and frames_only.refined == ["Ap_Vertebra"]
    assert np.array_equal(full.model_frame_masks["Ap_Vertebra"], frames_only.model_frame_masks["Ap_Vertebra"])


def test_an_empty_first_stage_mask_is_not_refined(refined: ModelRegistry) -> None:
    dark = np.zeros((200, 100), np.uint8)  # nothing above any threshold: no window to place
    result = Segmenter(refined).segment(dark, "AP", ["Ap_Vertebra"])
    assert result.refined == [] and result.models_used == ["Ap_Vertebra"]
    assert not result.masks["Ap_Vertebra"].any()


def test_a_refinement_of_an_unknown_model_is_reported(models_dir: Path, tmp_path: Path) -> None:
    out = copy_models_dir(models_dir, tmp_path / "models")
    name = add_refinement_model(out, refines="No_Such_Model")
    reg = ModelRegistry.load(out, providers=CPU, intra_op_threads=1, use_refinement=True)
    assert not reg.ready
    assert "No_Such_Model" in reg.problems[name]
    assert reg.refinement_model("Ap_Vertebra") is None  # never served
    assert Segmenter(reg).segment(spine_image(), "AP", ["Ap_Vertebra"]).refined == []


def test_http_reports_the_refinement_model(refined_dir: Path) -> None:
    client = start_client(make_settings(refined_dir, refinement=True))
    try:
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        entry = models["Ap_Vertebra_refine"]
        assert entry["kind"] == "refinement" and entry["refines"] == "Ap_Vertebra" and entry["ready"]
        r = client.post("/segment", files={"file": ("x.png", png_bytes(), "image/png")}, data={"view": "AP"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [m["name"] for m in body["models"]][-1] == "Ap_Vertebra_refine"
        assert "refinement" in body["timings_ms"]
    finally:
        client.__exit__(None, None, None)
    off = start_client(make_settings(refined_dir))  # the default: first-stage masks
    try:
        r = off.post("/segment", files={"file": ("x.png", png_bytes(), "image/png")}, data={"view": "AP"})
        assert r.status_code == 200, r.text
        assert "Ap_Vertebra_refine" not in [m["name"] for m in r.json()["models"]]
    finally:
        off.__exit__(None, None, None)
