"""ModelRegistry: loading (and every way a model can be unservable), segmentation, mask scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from spine_service_testlib import CLF_HW, CPU, SEG_HW, copy_models_dir, spine_image, write_models_dir

import spine_engine.models as models_module
import spine_engine.segmentation as segmentation_module
from spine_core.preprocessing import mask_to_classifier_input, preprocess_image, probabilities_to_source_mask, to_unet_batch
from spine_core.structures import CLASSIFIER_MODEL_NAME, structures_for_view
from spine_engine import ModelRegistry, ModelUnavailableError, RuntimeTuning, Segmenter, UnknownStructureError, UnknownViewError


def test_loads_every_model_ready(registry: ModelRegistry) -> None:
    assert registry.ready
    assert registry.problems == {}
    assert registry.execution_provider == "CPUExecutionProvider"
    assert registry.manifest is not None and len(registry.models) == 9
    assert all(m.warm and m.provider == "CPUExecutionProvider" for m in registry.models.values())


def test_default_providers_report_what_the_session_runs_on(models_dir: Path) -> None:
    # onnxruntime-gpu lists CUDA as available even where it cannot start; the registry must report the truth.
    reg = ModelRegistry.load(models_dir, intra_op_threads=1)
    assert reg.requested_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    truth = {m.session.get_providers()[0] for m in reg.models.values()}
    assert reg.execution_provider == ", ".join(sorted(truth))
    assert reg.ready


def test_thread_counts_are_set_explicitly(models_dir: Path) -> None:
    reg = ModelRegistry.load(models_dir, providers=CPU, intra_op_threads=3, inter_op_threads=2)
    options = {name: reg.get(name).session.get_session_options() for name in reg.models}  # type: ignore[union-attr]
    assert len(options) == 9
    classifier = reg.classifier()
    assert classifier is not None
    last = options.pop(classifier.name)
    assert all(o.intra_op_num_threads == 3 and o.inter_op_num_threads == 2 for o in options.values())
    # The classifier runs last and alone in a request: it takes the threads of every inference slot.
    assert last.intra_op_num_threads == 3 * reg.tuning.inference_slots and last.inter_op_num_threads == 2


@pytest.mark.parametrize("shape", [(300, 120), (90, 400), (64, 32), (7, 5)])
def test_masks_at_original_size_and_model_frame(registry: ModelRegistry, shape: tuple[int, int]) -> None:
    image = spine_image(*shape) if min(shape) > 20 else np.arange(shape[0] * shape[1], dtype=np.uint8).reshape(shape)
    result = Segmenter(registry).segment(image, "AP")
    assert list(result.masks) == structures_for_view("AP")
    for structure in result.masks:
        assert result.masks[structure].shape == shape and result.masks[structure].dtype == bool
        assert result.model_frame_masks[structure].shape == SEG_HW and result.model_frame_masks[structure].dtype == bool
    assert (result.letterbox.src_h, result.letterbox.src_w) == shape
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess"}
    assert result.models_used == structures_for_view("AP")


def test_segment_equals_the_shared_preprocessing_and_onnxruntime(registry: ModelRegistry, models_dir: Path) -> None:
    image = spine_image(250, 90, seed=3)
    result = Segmenter(registry).segment(image, "LAT", ["Lat_Vertebra"])
    x, box = preprocess_image(image, SEG_HW)
    session = ort.InferenceSession(str(models_dir / "Lat_Vertebra/1/model.onnx"), providers=CPU)
    prob = session.run(None, {"input_image": to_unet_batch([x])})[0][0, :, :, 0]
    np.testing.assert_array_equal(result.masks["Lat_Vertebra"], probabilities_to_source_mask(prob, box, 0.5))
    np.testing.assert_array_equal(result.model_frame_masks["Lat_Vertebra"], prob >= 0.5)
    assert 0 < result.masks["Lat_Vertebra"].sum() < image.size


def test_preprocesses_once_per_image(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = segmentation_module.preprocess_image
    monkeypatch.setattr(segmentation_module, "preprocess_image", lambda img, hw: calls.append(hw) or real(img, hw))
    Segmenter(registry).segment(spine_image(), "LAT")
    assert calls == [SEG_HW]


def test_colour_and_16bit_arrays(registry: ModelRegistry) -> None:
    gray = spine_image()
    rgb = Segmenter(registry).segment(np.repeat(gray[..., None], 3, axis=2), "AP").masks
    wide = Segmenter(registry).segment(gray.astype(np.uint16) * 257, "AP").masks
    base = Segmenter(registry).segment(gray, "AP").masks
    for s in base:
        np.testing.assert_array_equal(rgb[s], base[s])
        np.testing.assert_array_equal(wide[s], base[s])


def test_structure_subset_and_errors(registry: ModelRegistry) -> None:
    assert list(Segmenter(registry).segment(spine_image(), "AP", ["Ap_Vertebra"]).masks) == ["Ap_Vertebra"]
    with pytest.raises(UnknownViewError, match="unknown view"):
        Segmenter(registry).segment(spine_image(), "PA")
    with pytest.raises(UnknownStructureError, match="unknown structure 'Ap_Rib'"):
        Segmenter(registry).segment(spine_image(), "AP", ["Ap_Rib"])
    with pytest.raises(UnknownStructureError, match="belongs to view LAT"):
        Segmenter(registry).segment(spine_image(), "AP", ["Lat_Vertebra"])
    with pytest.raises(UnknownStructureError):
        Segmenter(registry).segment(spine_image(), "AP", [])


@pytest.mark.parametrize(("slots", "batches"), [(0, [3]), (1, [3]), (2, [1, 2]), (4, [1, 1, 1])])
def test_classify_masks_one_batch_per_cpu_slot(models_dir: Path, slots: int, batches: list[int]) -> None:
    # Sessions have one thread per slot on the CPU: a study's masks are split so the slots share them.
    registry = ModelRegistry.load(models_dir, providers=CPU, tuning=RuntimeTuning(inference_slots=slots))
    calls: list[tuple[str, int]] = []
    frames = Segmenter(registry).segment(spine_image(), "AP").model_frame_masks
    registry.on_inference = lambda name, seconds, batch: calls.append((name, batch))
    scores = Segmenter(registry).classify_masks(frames)
    assert sorted(calls) == [(CLASSIFIER_MODEL_NAME, b) for b in batches]
    assert list(scores) == list(frames)
    for structure, (p_normal, p_damaged) in scores.items():
        assert p_normal + p_damaged == pytest.approx(1.0, abs=1e-5)
        # The tiny classifier: p_damaged = softmax over 8*coverage - 2 of the box-downsampled mask.
        coverage = mask_to_classifier_input(frames[structure], CLF_HW).mean()
        assert p_damaged == pytest.approx(1 / (1 + np.exp(-(16 * coverage - 4))), abs=1e-5)
    assert Segmenter(registry).classify_masks({}) == {}


@pytest.mark.parametrize(("slots", "batches"), [(0, [5]), (1, [5]), (2, [2, 3])])
def test_a_batch_run_across_the_slots_answers_as_one_run(models_dir: Path, slots: int, batches: list[int]) -> None:
    # The crop models' batches are split so that every slot (one core each) takes a part.
    registry = ModelRegistry.load(models_dir, providers=CPU, tuning=RuntimeTuning(inference_slots=slots))
    model = registry.get("Ap_Vertebra")
    batch = np.random.default_rng(0).random((5, *SEG_HW, 1), dtype=np.float32)
    whole = model.run_batch(batch)
    calls: list[int] = []
    registry.on_inference = lambda name, seconds, size: calls.append(size)
    np.testing.assert_allclose(registry.infer_across_slots(model, batch), whole, atol=1e-6)
    assert sorted(calls) == batches


# --------------------------------------------------------------------------- not servable


def _broken(tmp_path: Path, models_dir: Path, how: str) -> ModelRegistry:
    d = copy_models_dir(models_dir, tmp_path / "models")
    target = d / "Ap_Vertebra/1/model.onnx"
    manifest_path = d / "manifest.json"
    if how == "missing":
        target.unlink()
    elif how == "corrupt":  # the manifest's sha256 matches the broken bytes: onnxruntime must refuse them
        target.write_bytes(b"not an onnx graph")
        data = json.loads(manifest_path.read_text())
        from spine_core.manifest import sha256_file

        for m in data["models"]:
            if m["name"] == "Ap_Vertebra":
                m["sha256"] = sha256_file(target)
        manifest_path.write_text(json.dumps(data))
    elif how == "sha":
        data = json.loads(manifest_path.read_text())
        for m in data["models"]:
            if m["name"] == "Ap_Vertebra":
                m["sha256"] = "0" * 64
        manifest_path.write_text(json.dumps(data))
    elif how == "input_name":
        data = json.loads(manifest_path.read_text())
        for m in data["models"]:
            if m["name"] == "Ap_Vertebra":
                m["input_name"] = "images"
        manifest_path.write_text(json.dumps(data))
    return ModelRegistry.load(d, providers=CPU, intra_op_threads=1)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("missing", "is missing"),
        ("corrupt", "cannot be loaded by onnxruntime"),
        ("sha", "sha256"),
        ("input_name", "no input 'images'"),
    ],
)
def test_a_bad_model_is_reported_by_name_and_never_served(tmp_path: Path, models_dir: Path, how: str, reason: str) -> None:
    reg = _broken(tmp_path, models_dir, how)
    assert not reg.ready
    assert list(reg.problems) == ["Ap_Vertebra"] and reason in reg.problems["Ap_Vertebra"]
    with pytest.raises(ModelUnavailableError) as err:
        Segmenter(reg).segment(spine_image(), "AP")
    assert "Ap_Vertebra" in err.value.problems
    # Models that are fine keep working: the other structures of AP, and LAT.
    assert list(Segmenter(reg).segment(spine_image(), "AP", ["Ap_Pedicle"]).masks) == ["Ap_Pedicle"]
    assert len(Segmenter(reg).segment(spine_image(), "LAT").masks) == 5


def test_missing_and_invalid_manifest(tmp_path: Path) -> None:
    reg = ModelRegistry.load(tmp_path, providers=CPU)
    assert not reg.ready and "not found" in reg.problems["manifest"] and reg.execution_provider == "none"
    with pytest.raises(ModelUnavailableError):
        Segmenter(reg).segment(spine_image(), "AP")
    (tmp_path / "manifest.json").write_text("{not json")
    reg = ModelRegistry.load(tmp_path, providers=CPU)
    assert not reg.ready and "invalid" in reg.problems["manifest"]


def test_require_gpu_without_cuda_is_not_ready(models_dir: Path) -> None:
    reg = ModelRegistry.load(models_dir, providers=CPU, intra_op_threads=1, require_gpu=True)
    assert not reg.ready
    assert len(reg.problems) == 9
    assert all("require_gpu" in why and "CPUExecutionProvider" in why for why in reg.problems.values())
    with pytest.raises(ModelUnavailableError):
        Segmenter(reg).segment(spine_image(), "AP")


def test_manifest_input_shape_drives_the_sizes(tmp_path: Path) -> None:
    d = write_models_dir(tmp_path / "m", seg_hw=(48, 40), clf_hw=(8, 8))
    reg = ModelRegistry.load(d, providers=CPU, intra_op_threads=1, warmup=False)
    assert reg.ready
    result = Segmenter(reg).segment(spine_image(120, 60), "AP")
    assert next(iter(result.model_frame_masks.values())).shape == (48, 40)
    assert len(Segmenter(reg).classify_masks(result.model_frame_masks)) == 3


def test_run_checks_inputs(registry: ModelRegistry) -> None:
    from spine_engine import InvalidInputError, UnknownModelError

    x = np.zeros((2, *SEG_HW, 1), np.float32)
    out = registry.run("Ap_Vertebra", {"input_image": x})
    assert out["mask_prob"].shape == (2, *SEG_HW, 1)
    with pytest.raises(UnknownModelError):
        registry.run("nope", {"input_image": x})
    with pytest.raises(InvalidInputError, match="float32"):
        registry.run("Ap_Vertebra", {"input_image": x.astype(np.float64)})
    with pytest.raises(InvalidInputError, match="shape"):
        registry.run("Ap_Vertebra", {"input_image": np.zeros((1, 10, 10, 1), np.float32)})
    with pytest.raises(InvalidInputError, match="takes inputs"):
        registry.run("Ap_Vertebra", {"x": x})


def test_a_graph_with_a_fixed_batch_is_fed_in_slices(tmp_path: Path) -> None:
    import onnx

    d = write_models_dir(tmp_path / "m")
    path = d / "Mask_Classifier/1/model.onnx"
    graph = onnx.load(str(path))
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # as some exporters write it
    graph.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(graph, str(path))
    reg = ModelRegistry.load(d, providers=CPU, intra_op_threads=1, verify_sha256=False)
    assert reg.ready
    frames = Segmenter(reg).segment(spine_image(), "AP").model_frame_masks
    scores = Segmenter(reg).classify_masks(frames)
    assert len(scores) == 3 and all(abs(sum(p) - 1) < 1e-5 for p in scores.values())


def test_provider_options_reach_the_session(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list] = []
    real = ort.InferenceSession

    def spy(path: str, sess_options: ort.SessionOptions, providers: list) -> ort.InferenceSession:
        seen.append(list(providers))
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    # As on a machine whose CUDA libraries load (whether or not this one has them).
    monkeypatch.setattr(models_module, "_cuda_unusable_reason", lambda: None)
    options = {"CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"}}
    reg = ModelRegistry.load(models_dir, providers=["CUDAExecutionProvider", *CPU], provider_options=options)
    assert seen[0] == [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]
    if reg.execution_provider == "CPUExecutionProvider":  # no CUDA here: later sessions stop asking for it
        assert seen[-1] == ["CPUExecutionProvider"]
    assert reg.ready


def test_without_cuda_one_clear_line_and_no_onnxruntime_error(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # Whatever this machine has: the CUDA provider library is reported as not loadable.
    monkeypatch.setattr(models_module, "_cuda_unusable_reason", lambda: "libcublasLt.so.13: cannot open shared object file")
    seen: list[list] = []
    real = ort.InferenceSession

    def spy(path: str, sess_options: ort.SessionOptions, providers: list) -> ort.InferenceSession:
        seen.append(list(providers))
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    with caplog.at_level("INFO", logger="spine_engine"):
        reg = ModelRegistry.load(models_dir, intra_op_threads=1)
    assert reg.ready and reg.execution_provider == "CPUExecutionProvider"
    assert all(providers == ["CPUExecutionProvider"] for providers in seen)  # CUDA never asked for
    lines = [r.getMessage() for r in caplog.records if "CUDA" in r.getMessage() or "requested first" in r.getMessage()]
    why = "libcublasLt.so.13: cannot open shared object file"
    assert lines == [f"CUDA is not usable here ({why}): inference runs on CPUExecutionProvider"]
    assert "Failed to load library" not in capfd.readouterr().err


@pytest.mark.skipif(models_module._cuda_unusable_reason() is None, reason="CUDA loads on this machine")
def test_onnxruntime_stays_quiet_on_this_machine_without_cuda(models_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The real check, unpatched: onnxruntime writes its red error to fd 2 only when asked for CUDA.
    capfd.readouterr()
    reg = ModelRegistry.load(models_dir, intra_op_threads=1)
    assert reg.ready and reg.execution_provider == "CPUExecutionProvider"
    assert "Failed to load library" not in capfd.readouterr().err


def test_warm_up_runs_every_batch_size_the_scheduler_can_form(models_dir: Path) -> None:
    reg = ModelRegistry.load(models_dir, providers=CPU, tuning=RuntimeTuning(inference_slots=2, max_batch=3))
    assert not reg.on_gpu  # so load() did not do it already
    calls: list[tuple[str, int]] = []
    reg.on_inference = lambda name, seconds, batch: calls.append((name, batch))
    reg.warm_up_batches()
    assert sorted(calls) == sorted((name, b) for name in reg.models for b in (2, 3))
    assert reg.ready


def test_segment_many_without_source_masks(registry: ModelRegistry) -> None:
    images = [(spine_image(300, 120, seed=5), "AP", None), (spine_image(280, 140, seed=6), "LAT", None)]
    full = Segmenter(registry).segment_many(images)
    frames_only = Segmenter(registry).segment_many(images, source_masks=False)
    for a, b in zip(full, frames_only, strict=True):
        assert b.masks == {} and a.masks
        assert list(b.model_frame_masks) == list(a.model_frame_masks)
        for s in a.model_frame_masks:
            assert np.array_equal(a.model_frame_masks[s], b.model_frame_masks[s])


def test_segment_many_with_the_source_masks_of_named_structures(registry: ModelRegistry) -> None:
    images = [(spine_image(300, 120, seed=5), "AP", None), (spine_image(280, 140, seed=6), "LAT", None)]
    full = Segmenter(registry).segment_many(images)
    some = Segmenter(registry).segment_many(images, source_masks={"Ap_Vertebra"})
    assert list(some[0].masks) == ["Ap_Vertebra"] and some[1].masks == {}
    assert np.array_equal(some[0].masks["Ap_Vertebra"], full[0].masks["Ap_Vertebra"])
    for a, b in zip(full, some, strict=True):
        for s in a.model_frame_masks:
            assert np.array_equal(a.model_frame_masks[s], b.model_frame_masks[s])
