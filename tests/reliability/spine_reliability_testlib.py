"""Helpers of the reliability tests: the service tests' tiny ONNX models and images, the hostile-file corpus,
and a live `spine-serve` subprocess on 127.0.0.1.

A uniquely named module (pytest's prepend import mode needs unique basenames across tests/). The tiny models
come from tests/service/spine_service_testlib.py, put on sys.path here so this folder also runs on its own.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"
if str(SERVICE_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVICE_TESTS))

from spine_service_testlib import (  # noqa: E402
    CPU,
    encode,
    make_dicom,
    make_settings,
    png_declaring,
    post_segment,
    serve_live,
    spine_image,
    start_client,
    truncated_jpeg,
    write_models_dir,
)

__all__ = [
    "CPU",
    "HostileFile",
    "encode",
    "hostile_corpus",
    "make_dicom",
    "make_settings",
    "png_declaring",
    "post_segment",
    "serve_live",
    "spine_image",
    "spine_serve",
    "start_client",
    "write_models_dir",
]

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the hostile-file corpus


@dataclass(frozen=True)
class HostileFile:
    """One hostile (or merely odd) upload and what the service must answer: a 4xx code, or 200 (accepted)."""

    data: bytes
    filename: str
    status: int
    code: str | None  # the error `code`; None for an accepted file
    why: str  # the documented decision, one line


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """Signature + IHDR and nothing else: a PNG cut right after its header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


def _tiff(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="TIFF") if mode else Image.fromarray(array).save(buf, format="TIFF")
    return buf.getvalue()


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is patched to declare width x height."""
    data = bytearray(encode(spine_image(64, 32), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _tiff_declaring(width: int, height: int) -> bytes:
    """A small uncompressed TIFF whose ImageWidth/ImageLength tags are patched to declare width x height."""
    data = bytearray(_tiff(spine_image(64, 32)))
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, _kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG, value in place
            value = width if tag == 256 else height
            struct.pack_into("<HHII", data, entry, tag, 4, 1, value)  # rewrite as LONG
    return bytes(data)


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(spine_image()).convert("CMYK").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.fromarray(spine_image(seed=i)).convert("P") for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _dicom_without_pixels() -> bytes:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(make_dicom(spine_image(40, 30))))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def hostile_corpus() -> dict[str, HostileFile]:
    """Every hostile file of issue 6, generated here (nothing binary is committed)."""
    from pydicom.uid import HTJ2KLossless, JPEG2000Lossless

    good_png = encode(spine_image())
    good_jpeg = encode(spine_image(), "JPEG", quality=90)
    float_img = (spine_image().astype(np.float32) / 255.0) * 1000.0 - 200.0
    float_nan = float_img.copy()
    float_nan[::7, ::5] = np.nan
    corpus = {
        "empty (0 bytes)": HostileFile(b"", "a.png", 422, "empty_file", "nothing to decode"),
        "truncated jpeg": HostileFile(truncated_jpeg(), "a.jpg", 422, "corrupt_image", "cut in the entropy-coded data"),
        "jpeg cut after its header": HostileFile(good_jpeg[:200], "a.jpg", 422, "corrupt_image", "no scan data at all"),
        "truncated png": HostileFile(good_png[: len(good_png) // 2], "a.png", 422, "corrupt_image", "cut inside IDAT"),
        "png cut after IHDR": HostileFile(_png_header_only(120, 300), "a.png", 422, "corrupt_image", "header, no data"),
        "png with a broken IDAT crc": HostileFile(
            good_png[:-20] + bytes(b ^ 0xFF for b in good_png[-20:-12]) + good_png[-12:],
            "a.png",
            422,
            "corrupt_image",
            "checksums are checked",
        ),
        "wrong magic (png renamed, bytes scrambled)": HostileFile(
            b"\x00\x00\x00\x00" + good_png[4:], "a.png", 415, "unsupported_media_type", "not a format we read"
        ),
        "jpeg magic, then text": HostileFile(
            b"\xff\xd8\xff\xe0" + b"not really a jpeg " * 20, "a.jpg", 422, "corrupt_image", "JPEG marker then garbage"
        ),
        "pdf": HostileFile(b"%PDF-1.4\n" + b"0" * 512, "a.pdf", 415, "unsupported_media_type", "not an image"),
        "html": HostileFile(b"<html><body>hi</body></html>", "a.png", 415, "unsupported_media_type", "not an image"),
        "1x1 png": HostileFile(encode(np.array([[128]], np.uint8)), "a.png", 200, None, "accepted: valid, no minimum size"),
        "1x1 rgb jpeg": HostileFile(
            encode(np.full((1, 1, 3), 200, np.uint8), "JPEG"), "a.jpg", 200, None, "accepted: valid, no minimum size"
        ),
        "60000x60000 declared png": HostileFile(
            png_declaring(60000, 60000), "bomb.png", 413, "image_too_large", "pixel limit, from the header"
        ),
        "60000x60000 declared png, header only": HostileFile(
            _png_header_only(60000, 60000), "bomb.png", 413, "image_too_large", "pixel limit, before any data is needed"
        ),
        "65000x65000 declared jpeg": HostileFile(
            _jpeg_declaring(65000, 65000), "bomb.jpg", 413, "image_too_large", "pixel limit, from the SOF header"
        ),
        "60000x60000 declared tiff": HostileFile(
            _tiff_declaring(60000, 60000), "bomb.tif", 413, "image_too_large", "pixel limit, from the IFD"
        ),
        "0x0 declared png": HostileFile(png_declaring(0, 0), "a.png", 422, "corrupt_image", "no pixels"),
        "16-bit tiff": HostileFile(
            _tiff((spine_image().astype(np.uint16) * 257).astype(np.uint16)), "a.tif", 200, None, "accepted: 16-bit gray"
        ),
        "float32 tiff": HostileFile(_tiff(float_img, "F"), "a.tif", 200, None, "accepted: 32-bit float gray, finite"),
        "float32 tiff with NaN": HostileFile(
            _tiff(float_nan, "F"), "a.tif", 422, "corrupt_image", "non-finite pixel values cannot be normalised"
        ),
        "cmyk jpeg": HostileFile(_cmyk_jpeg(), "a.jpg", 200, None, "accepted: converted to RGB, then gray"),
        "animated gif": HostileFile(_animated_gif(), "a.gif", 415, "unsupported_media_type", "GIF is not an allowed format"),
        "dicom without pixel data": HostileFile(_dicom_without_pixels(), "a.dcm", 422, "no_pixel_data", "nothing to segment"),
        # HTJ2K: no decoder without pylibjpeg-openjpeg (highdicom brings a JPEG-LS one, so that is no longer the case)
        "dicom htj2k (no decoder installed)": HostileFile(
            make_dicom(np.zeros((8, 8), np.uint16), transfer_syntax=HTJ2KLossless),
            "a.dcm",
            415,
            "unsupported_media_type",
            "compressed syntax without a decoder",
        ),
        "dicom jpeg 2000 with a bad codestream": HostileFile(
            make_dicom(np.zeros((8, 8), np.uint16), transfer_syntax=JPEG2000Lossless),
            "a.dcm",
            422,
            "corrupt_image",
            "Pillow's OpenJPEG decodes this syntax; these bytes are not a J2K stream",
        ),
        "dicom declaring 60000x60000": HostileFile(
            make_dicom(np.zeros((4, 4), np.uint16), rows_cols=(60000, 60000)),
            "a.dcm",
            413,
            "image_too_large",
            "pixel limit, from Rows/Columns",
        ),
        "dicom with fewer pixel bytes than declared": HostileFile(
            make_dicom(np.zeros((4, 4), np.uint16), rows_cols=(400, 400)),
            "a.dcm",
            422,
            "corrupt_image",
            "pixel data shorter than Rows x Columns",
        ),
        "dicom magic then garbage": HostileFile(
            # pydicom reads what follows as an (empty) data set: a DICOM object without pixel data, on every route
            bytes(128) + b"DICM" + os.urandom(64),
            "a.dcm",
            422,
            "no_pixel_data",
            "preamble then nothing parseable",
        ),
    }
    return corpus


# --------------------------------------------------------------------------- a live spine-serve subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    process: subprocess.Popen
    base_url: str
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


def serve_env(models_dir: Path, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update(
        {
            "SPINE_MODELS_DIR": str(models_dir),
            "SPINE_PROVIDERS": "CPUExecutionProvider",
            "SPINE_INTRA_OP_THREADS": "1",
            "SPINE_LOG_JSON": "true",
            "SPINE_LOG_LEVEL": "info",
        }
    )
    env.update({f"SPINE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def spine_serve(
    models_dir: Path, log_path: Path, ready_timeout: float = 60.0, until: str = "ready", **settings: object
) -> Iterator[LiveServer]:
    """`spine-serve` (the console script's code, `python -m service`) on 127.0.0.1:<free port>.

    Yields once /health/ready says ready (`until="ready"`) or merely that loading finished (`until="loaded"`,
    for a server that is meant to be not ready). SIGTERM on exit.
    """
    port = free_port()
    env = serve_env(models_dir, **settings)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=str(log_path.parent),  # no stray .env from the checkout
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        headers = {"X-API-Key": str(settings["api_keys"]).split(",")[0]} if settings.get("api_keys") else {}
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"spine-serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{server.base_url}/health/ready", headers=headers, timeout=2)
                if r.status_code == 200 or (until == "loaded" and r.json().get("status") != "loading"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"spine-serve not ready after {ready_timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
