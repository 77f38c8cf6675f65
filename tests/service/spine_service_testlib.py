"""Helpers of the service tests: tiny ONNX models built with onnx.helper, a manifest written with
spine_core.manifest, test images, a TestClient over the app, and a live uvicorn on 127.0.0.1.

A uniquely named module (not `conftest`) so tests in sub-folders can import it unambiguously."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import uvicorn
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from service.core.config import Settings
from service.main import create_app
from spine_core.manifest import Manifest, ModelEntry, load_manifest, save_manifest, sha256_file
from spine_core.preprocessing import preprocessing_spec, refine_preprocessing_spec
from spine_core.structures import CLASSIFIER_MODEL_NAME, STRUCTURES, refinement_model_name
from spine_engine import ModelRegistry

SEG_HW = (64, 32)
CLF_HW = (16, 8)
CPU = ["CPUExecutionProvider"]
# Each structure's tiny "U-Net" thresholds the preprocessed intensity at its own level, so masks differ.
LEVELS = {name: 0.35 + 0.05 * i for i, name in enumerate(STRUCTURES)}


def _save(model: onnx.ModelProto, path: Path) -> None:
    model.ir_version = 8  # readable by any onnxruntime >= 1.14
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_segmenter(path: Path, level: float, hw: tuple[int, int] = SEG_HW) -> None:
    """NHWC [N,H,W,1] -> sigmoid(40 * (x - level)): a 'mask' of the pixels brighter than `level`."""
    h, w = hw
    x = helper.make_tensor_value_info("input_image", TensorProto.FLOAT, ["N", h, w, 1])
    y = helper.make_tensor_value_info("mask_prob", TensorProto.FLOAT, ["N", h, w, 1])
    scale = numpy_helper.from_array(np.array(40.0, np.float32), "scale")
    shift = numpy_helper.from_array(np.array(-40.0 * level, np.float32), "shift")
    nodes = [
        helper.make_node("Mul", ["input_image", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["mask_prob"]),
    ]
    graph = helper.make_graph(nodes, "tiny_unet", [x], [y], initializer=[scale, shift])
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_classifier(path: Path, hw: tuple[int, int] = CLF_HW) -> None:
    """[N,h,w,1] mask -> softmax([-k*coverage + b, k*coverage - b]): more mask = more 'Damaged'."""
    h, w = hw
    n = h * w
    x = helper.make_tensor_value_info("mask_input", TensorProto.FLOAT, ["N", h, w, 1])
    y = helper.make_tensor_value_info("class_prob", TensorProto.FLOAT, ["N", 2])
    weights = np.zeros((n, 2), np.float32)
    weights[:, 0], weights[:, 1] = -8.0 / n, 8.0 / n
    bias = np.array([2.0, -2.0], np.float32)
    nodes = [
        helper.make_node("Flatten", ["mask_input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["class_prob"], axis=1),
    ]
    initializers = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")]
    graph = helper.make_graph(nodes, "tiny_classifier", [x], [y], initializer=initializers)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _entry(models_dir: Path, name: str, kind: str, file: str, **kw: object) -> ModelEntry:
    h, w = kw.pop("hw")  # type: ignore[misc]
    base = {
        "name": name,
        "kind": kind,
        "version": "1",
        "file": file,
        "sha256": sha256_file(models_dir / file),
        "input_shape": [None, h, w, 1],
        "preprocessing": preprocessing_spec(),
        "parameters": 2,
        "opset": 17,
        "training_data": "synthetic test fixture",
        "split": "none",
        "epochs": 0,
        "metrics": {"val_dice": 0.0},
        "validated": True,
    }
    base.update(kw)
    return ModelEntry.model_validate(base)


def write_models_dir(models_dir: Path, seg_hw: tuple[int, int] = SEG_HW, clf_hw: tuple[int, int] = CLF_HW) -> Path:
    """Eight tiny U-Nets and the tiny classifier in the Triton layout, plus manifest.json."""
    entries = []
    for structure, view in STRUCTURES.items():
        file = f"{structure}/1/model.onnx"
        build_segmenter(models_dir / file, LEVELS[structure], seg_hw)
        entries.append(
            _entry(
                models_dir,
                structure,
                "segmentation",
                file,
                hw=seg_hw,
                structure=structure,
                view=view,
                input_name="input_image",
                output_name="mask_prob",
                output_shape=[None, *seg_hw, 1],
                threshold=0.5,
                architecture="tiny-threshold",
            )
        )
    file = f"{CLASSIFIER_MODEL_NAME}/1/model.onnx"
    build_classifier(models_dir / file, clf_hw)
    entries.append(
        _entry(
            models_dir,
            CLASSIFIER_MODEL_NAME,
            "classification",
            file,
            hw=clf_hw,
            input_name="mask_input",
            output_name="class_prob",
            output_shape=[None, 2],
            classes=["Normal", "Damaged"],
            architecture="tiny-linear",
        )
    )
    save_manifest(Manifest(created="2026-01-01T00:00:00Z", models=entries), models_dir)
    return models_dir


REFINE_HW = (128, 32)
REFINE_LEVEL = 0.6


def add_refinement_model(
    models_dir: Path, structure: str = "Ap_Vertebra", hw: tuple[int, int] = REFINE_HW, refines: str | None = None
) -> str:
    """A tiny second stage for `structure` (thresholds its window's intensity at REFINE_LEVEL); returns its name."""
    name = refinement_model_name(structure)
    file = f"{name}/1/model.onnx"
    build_segmenter(models_dir / file, REFINE_LEVEL, hw)
    manifest = load_manifest(models_dir)
    entry = _entry(
        models_dir,
        name,
        "refinement",
        file,
        hw=hw,
        structure=structure,
        refines=refines or structure,
        view=STRUCTURES[structure],
        input_name="input_image",
        output_name="mask_prob",
        output_shape=[None, *hw, 1],
        threshold=0.5,
        preprocessing=refine_preprocessing_spec(),
        architecture="tiny-threshold",
    )
    save_manifest(Manifest(created=manifest.created, models=[*manifest.models, entry]), models_dir)
    return name


def copy_models_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def make_settings(models_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "models_dir": models_dir,
        "providers": CPU,
        "intra_op_threads": 1,
        "log_json": True,
        "log_level": "warning",
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def start_client(settings: Settings, registry: ModelRegistry | None = None) -> TestClient:
    """A TestClient whose lifespan ran and whose models finished loading (the caller must close it); `registry`:
    models already loaded (shared between tests), else the app loads its own from the settings."""
    app = create_app(settings, registry)
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    assert app.state.models.wait(30), "models did not load"
    return client


# --------------------------------------------------------------------------- images


def spine_image(height: int = 300, width: int = 120, seed: int = 0) -> np.ndarray:
    """A uint8 'radiograph': noise with a column of bright blocks (and a gradient, so masks differ by level)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 10, size=(height, width))
    img += np.linspace(0, 60, height)[:, None]
    cx = width // 2
    for i in range(6):
        top = int(height * 0.1 + i * height * 0.13)
        img[top : top + int(height * 0.08), cx - width // 6 : cx + width // 6] += 110
    return img.clip(0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save: object) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def png_bytes(array: np.ndarray | None = None) -> bytes:
    return encode(spine_image() if array is None else array, "PNG")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_live(settings: Settings, registry: ModelRegistry | None = None) -> Iterator[str]:
    """uvicorn serving the app on 127.0.0.1:<free port> in a thread; yields "127.0.0.1:<port>"."""
    port = free_port()
    app = create_app(settings, registry)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and app.state.models.loaded.is_set()):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# --------------------------------------------------------------------------- DICOM and hostile files


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    view: str | None = None,
    transfer_syntax: str | None = None,
    rows_cols: tuple[int, int] | None = None,
    preamble: bool = True,
) -> bytes:
    """A DX DICOM file around `pixels` (uint8/uint16 gray), written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, RLELossless, generate_uid

    syntax = UID(transfer_syntax or ExplicitVRLittleEndian)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows_cols or pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if view is not None:
        ds.ViewPosition = view
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless, np.ascontiguousarray(pixels))
    elif syntax != ExplicitVRLittleEndian:  # a compressed syntax we cannot encode: valid framing, opaque bytes
        meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(64)])
        ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data if preamble else data[132:]  # without the 128-byte preamble and "DICM"


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (the classic decompression bomb shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = encode(spine_image(), "JPEG", quality=90)
    return data[: len(data) // 2]


def tall_film() -> np.ndarray:
    """A full-spine film's size (6500 x 2500), cheap to encode: mostly flat with a bright column."""
    img = np.full((6500, 2500), 40, np.uint8)
    img[500:6000, 1000:1500] = 200
    return img


# --------------------------------------------------------------------------- mask decoding (as a client would)


def decode_png_mask(b64: str) -> np.ndarray:
    import base64

    with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("L")) > 0


def decode_rle(rle: dict) -> np.ndarray:
    """COCO uncompressed RLE -> bool mask, with pycocotools (the reference decoder)."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    encoded = mask_utils.frPyObjects({"size": [h, w], "counts": list(rle["counts"])}, h, w)
    return mask_utils.decode(encoded).astype(bool)


def post_segment(client: TestClient, data: bytes, filename: str = "xray.png", **form: object):
    fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()}
    return client.post("/segment", files={"file": (filename, data, "application/octet-stream")}, data=fields)


def load_script(name: str):
    """A module of the repository's `scripts/` folder (run there as files, not a package), for its tests."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
