"""What scripts/soak.py sends: generated radiographs (PNG, JPEG, DICOM), a KServe v2 body, and the weighted
mix of request kinds, each with the status its answer must have."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


def _image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 10, size=(height, width)) + np.linspace(0, 60, height)[:, None]
    cx = width // 2
    for i in range(6):
        top = int(height * 0.1 + i * height * 0.13)
        img[top : top + int(height * 0.08), cx - width // 6 : cx + width // 6] += 110
    return img.clip(0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _dicom(array: np.ndarray, view: str) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PhotometricInterpretation = "DX", view, "MONOCHROME2"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PixelData = (array.astype(np.uint16) * 16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass
class Payloads:
    pngs: list[bytes]
    jpegs: list[bytes]
    dicoms: list[bytes]
    corrupt: bytes
    v2_model: str
    v2_body: bytes
    classify: bool


def make_payloads(seed: int, models: list[dict[str, Any]], scale: float) -> Payloads:
    """Varied sizes so the server's buffers see different shapes (a leak would show as RSS growth)."""
    rng = random.Random(seed)
    sizes = [(int(rng.randint(240, 900) * scale), int(rng.randint(100, 380) * scale)) for _ in range(12)]
    pngs = [_encode(_image(h, w, i), "PNG") for i, (h, w) in enumerate(sizes)]
    jpegs = [_encode(_image(h, w, 100 + i), "JPEG", quality=90) for i, (h, w) in enumerate(sizes)]
    dicoms = [_dicom(_image(h, w, 200 + i), "AP" if i % 2 else "LL") for i, (h, w) in enumerate(sizes[:6])]
    servable = {m["name"]: m for m in models if m["ready"]}
    if not servable:
        raise SystemExit("no servable model: see GET /health/ready")
    classify = any(m["kind"] == "classification" for m in servable.values()) and len(servable) == len(models)
    target = next((m for m in servable.values() if m["kind"] == "classification"), next(iter(servable.values())))
    shape = [1, *target["input_shape"][1:]]
    values = np.random.default_rng(seed).random(int(np.prod(shape)), dtype=np.float32)
    body = {"inputs": [{"name": target["input_name"], "datatype": "FP32", "shape": shape, "data": values.round(4).tolist()}]}
    return Payloads(pngs, jpegs, dicoms, pngs[0][: len(pngs[0]) // 2], target["name"], json.dumps(body).encode(), classify)


@dataclass
class Kind:
    name: str
    weight: int
    expect: int
    build: Callable[[Payloads, random.Random], dict[str, Any]]  # httpx.request kwargs


def _file(data: bytes, name: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, "application/octet-stream")}


KINDS = [
    Kind("segment_png_ap", 20, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.pngs), "a.png"), "data": {"view": "AP"}}),
    Kind("segment_jpeg_lat_rle", 14, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.jpegs), "a.jpg"),
        "data": {"view": "LAT", "mask_format": "rle"}}),
    Kind("segment_overlay_subset", 6, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.pngs), "a.png"),
        "data": {"view": "ap", "structures": "Ap_Vertebra", "overlay": "true"}}),
    Kind("segment_dicom", 6, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.dicoms), "a.dcm"), "data": {}}),
    Kind("classify_ap_lat", 14, 200, lambda p, r: {
        "method": "POST", "url": "/classify",
        "files": {"ap": ("a.png", r.choice(p.pngs), "image/png"), "lat": ("b.jpg", r.choice(p.jpegs), "image/jpeg")},
        "data": {"include_masks": r.choice(["true", "false"])}}),
    Kind("v2_infer", 10, 200, lambda p, r: {
        "method": "POST", "url": f"/v2/models/{p.v2_model}/infer", "content": p.v2_body,
        "headers": {"content-type": "application/json"}}),
    Kind("health_ready", 6, 200, lambda p, r: {"method": "GET", "url": "/health/ready"}),
    Kind("models", 3, 200, lambda p, r: {"method": "GET", "url": "/models"}),
    Kind("metrics", 3, 200, lambda p, r: {"method": "GET", "url": "/metrics"}),
    Kind("bad_empty_file", 6, 422, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(b"", "a.png"), "data": {"view": "AP"}}),
    Kind("bad_corrupt_png", 6, 422, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(p.corrupt, "a.png"), "data": {"view": "AP"}}),
    Kind("bad_unknown_structure", 6, 422, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.pngs), "a.png"),
        "data": {"view": "AP", "structures": "Ap_Rib"}}),
]  # fmt: skip


def plan(n: int, seed: int, classify: bool) -> list[Kind]:
    kinds = [k for k in KINDS if classify or k.name != "classify_ap_lat"]
    rng = random.Random(seed)
    return rng.choices(kinds, weights=[k.weight for k in kinds], k=n)
