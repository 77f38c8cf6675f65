"""One code per mistake: the same bad DICOM gets the same code from /classify, /segment, /dicom/seg and /dicom/sr."""

from __future__ import annotations

import io

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from spine_dicom_testlib import dx_bytes

DICOM = "application/dicom"


def _ct() -> bytes:
    return open(get_testdata_file("CT_small.dcm"), "rb").read()  # type: ignore[arg-type]


def _no_pixels() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dx_bytes()))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


ROUTES = {
    "/classify": lambda c, data: c.post("/classify", files={"ap": ("x.dcm", data, DICOM)}),
    "/segment": lambda c, data: c.post("/segment", files={"file": ("x.dcm", data, DICOM)}),
    "/segment view=AP": lambda c, data: c.post("/segment", files={"file": ("x.dcm", data, DICOM)}, data={"view": "AP"}),
    "/dicom/seg": lambda c, data: c.post("/dicom/seg", files={"file": ("x.dcm", data, DICOM)}),
    "/dicom/sr": lambda c, data: c.post("/dicom/sr", files={"file": ("x.dcm", data, DICOM)}),
}


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (_ct, "not_a_radiograph"),
        (_no_pixels, "no_pixel_data"),
        (lambda: b"", "empty_file"),
        (lambda: dx_bytes()[:6000], "corrupt_image"),
    ],
    ids=["ct", "no-pixel-data", "empty", "truncated"],
)
def test_every_route_answers_the_same_code(client: TestClient, make, code: str) -> None:  # type: ignore[no-untyped-def]
    data = make()
    answers = {route: call(client, data) for route, call in ROUTES.items()}
    codes = {route: (r.status_code, r.json().get("code")) for route, r in answers.items()}
    assert set(codes.values()) == {(422, code)}, codes
    details = {r.json()["detail"] for r in answers.values()}
    assert all(d for d in details)
