"""Every bad input of issue 3: a clear JSON 4xx (never a 500), and the next request is served."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import HTJ2KLossless
from spine_service_testlib import (
    encode,
    make_dicom,
    make_settings,
    png_declaring,
    post_segment,
    serve_live,
    spine_image,
    start_client,
    truncated_jpeg,
)

GOOD = encode(spine_image())
LIMIT = 64 * 1024


def _assert_error(r, status: int, code: str, text: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["code"] == code and text in body["detail"], body
    assert body["request_id"] == r.headers["x-request-id"]


def _assert_next_request_served(client: TestClient) -> None:
    assert post_segment(client, GOOD, view="AP").status_code == 200


SEGMENT_CASES: dict[str, tuple[Callable[[TestClient], object], int, str, str]] = {
    "empty file": (lambda c: post_segment(c, b"", view="AP"), 422, "empty_file", "empty"),
    "not an image": (lambda c: post_segment(c, b"%PDF-1.4 hello" * 20, "a.pdf", view="AP"), 415, "unsupported_media_type", "PNG"),
    "truncated jpeg": (lambda c: post_segment(c, truncated_jpeg(), "a.jpg", view="AP"), 422, "corrupt_image", "truncated"),
    "wrong view": (lambda c: post_segment(c, GOOD, view="OBLIQUE"), 422, "unknown_view", "expected one of AP, LAT"),
    "view missing for png": (lambda c: post_segment(c, GOOD), 422, "unknown_view", "view is required"),
    "unknown structure": (lambda c: post_segment(c, GOOD, view="AP", structures="Ap_Rib"), 422, "unknown_structure", "Ap_Rib"),
    "structure of the other view": (
        lambda c: post_segment(c, GOOD, view="AP", structures="Lat_Vertebra"),
        422,
        "unknown_structure",
        "belongs to view LAT",
    ),
    "missing file field": (lambda c: c.post("/segment", data={"view": "AP"}), 422, "validation_error", "file: Field required"),
    "bad mask_format": (lambda c: post_segment(c, GOOD, view="AP", mask_format="jpeg"), 422, "validation_error", "mask_format"),
    "bad overlay flag": (lambda c: post_segment(c, GOOD, view="AP", overlay="maybe"), 422, "validation_error", "overlay"),
    "decompression bomb": (lambda c: post_segment(c, png_declaring(60000, 60000), view="AP"), 413, "image_too_large", "limit"),
    "compressed dicom without decoder": (
        # HTJ2K: no decoder without pylibjpeg-openjpeg (highdicom brings a JPEG-LS one, pyjpegls)
        lambda c: post_segment(c, make_dicom(np.zeros((8, 8), np.uint16), transfer_syntax=HTJ2KLossless), "a.dcm", view="AP"),
        415,
        "unsupported_media_type",
        "JPEG 2000",
    ),
    "dicom claiming 60000x60000": (
        lambda c: post_segment(c, make_dicom(np.zeros((4, 4), np.uint16), rows_cols=(60000, 60000)), "a.dcm", view="AP"),
        413,
        "image_too_large",
        "60000x60000",
    ),
    "json instead of multipart": (lambda c: c.post("/segment", json={"view": "AP"}), 422, "validation_error", "file"),
    "unknown route": (lambda c: c.get("/segmentation"), 404, "not_found", "Not Found"),
    "wrong method": (lambda c: c.get("/segment"), 405, "method_not_allowed", "Method Not Allowed"),
}


@pytest.mark.parametrize("case", list(SEGMENT_CASES))
def test_segment_bad_input(client: TestClient, case: str) -> None:
    call, status, code, text = SEGMENT_CASES[case]
    _assert_error(call(client), status, code, text)
    _assert_next_request_served(client)


def test_classify_bad_input(client: TestClient) -> None:
    _assert_error(client.post("/classify", data={"include_masks": "true"}), 422, "validation_error", "at least one of")
    _assert_error(client.post("/classify", files={"ap": ("a.png", b"", "image/png")}), 422, "empty_file", "empty")
    r = client.post("/classify", files={"lat": ("a.png", GOOD, "image/png")}, data={"aggregation": "vote"})
    _assert_error(r, 422, "validation_error", "aggregation")
    _assert_next_request_served(client)


@pytest.mark.parametrize(
    "image",
    [
        np.repeat(spine_image()[..., None], 3, axis=2),  # RGB
        np.dstack([spine_image()] * 3 + [np.full((300, 120), 255, np.uint8)]),  # RGBA
        (spine_image().astype(np.uint16) * 257).astype(np.uint16),  # 16-bit
    ],
    ids=["rgb", "rgba", "16bit"],
)
def test_colour_and_16bit_uploads_are_accepted(client: TestClient, image: np.ndarray) -> None:
    r = post_segment(client, encode(image), view="AP")
    assert r.status_code == 200, r.text
    assert (r.json()["height"], r.json()["width"]) == (300, 120)


def test_palette_and_tiff_uploads_are_accepted(client: TestClient) -> None:
    assert post_segment(client, encode(spine_image(), "PNG", mode="P"), view="AP").status_code == 200
    assert post_segment(client, encode(spine_image(), "TIFF"), "a.tif", view="LAT").status_code == 200


# --------------------------------------------------------------------------- the byte limit


@pytest.fixture(scope="module")
def small_client(models_dir: Path) -> Iterator[TestClient]:
    c = start_client(make_settings(models_dir, max_upload_bytes=LIMIT))
    try:
        yield c
    finally:
        c.__exit__(None, None, None)


def test_over_the_byte_limit_by_content_length(small_client: TestClient) -> None:
    big = encode(np.random.default_rng(0).integers(0, 255, (400, 400), dtype=np.uint8))
    assert len(big) > LIMIT
    _assert_error(post_segment(small_client, big, view="AP"), 413, "body_too_large", "over the limit")
    _assert_next_request_served(small_client)


def test_over_the_byte_limit_while_streaming(small_client: TestClient) -> None:
    # No Content-Length (chunked): the limit is enforced on the bytes received, inside form parsing.
    boundary = "spineboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(64):
            yield b"\x00" * 4096

    r = small_client.post("/segment", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    _assert_error(r, 413, "body_too_large", "over the limit")
    _assert_next_request_served(small_client)


def _read_response(sock: socket.socket, data: bytes = b"") -> bytes:
    """Headers and, by Content-Length, the body of one HTTP response."""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return head + b"\r\n\r\n" + body


def test_413_before_the_body_is_read_on_a_real_socket(models_dir: Path) -> None:
    with serve_live(make_settings(models_dir, max_upload_bytes=LIMIT)) as address:
        host, port = address.split(":")
        # Content-Length of 10 GB and not one byte of body sent: the answer must come anyway.
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 10000000000\r\n\r\n"
            )
            assert _read_response(sock).startswith(b"HTTP/1.1 413")
        # Chunked: the server answers 413 once the limit is passed, long before the client is done.
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sent, answer = 0, b""
            sock.settimeout(0.05)
            while sent < 100 * LIMIT and not answer:
                chunk = b"\x00" * 8192
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                    answer = sock.recv(65536)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            sock.settimeout(10)
            answer = _read_response(sock, answer)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
            assert b"body_too_large" in answer
            assert sent < 10 * LIMIT
