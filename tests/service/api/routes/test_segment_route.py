"""POST /segment: the response contract of issue 3."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from spine_service_testlib import (
    decode_png_mask,
    decode_rle,
    encode,
    make_dicom,
    post_segment,
    spine_image,
    tall_film,
)

from spine_core.structures import structures_for_view
from spine_engine import ModelRegistry, Segmenter

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2


def test_png_masks_at_original_size(client: TestClient, registry: ModelRegistry) -> None:
    img = spine_image(300, 120)
    r = post_segment(client, encode(img), view="AP")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["view"], body["width"], body["height"], body["format"]) == ("AP", 120, 300, "PNG")
    assert [m["structure"] for m in body["masks"]] == structures_for_view("AP")
    expected = Segmenter(registry).segment(img, "AP").masks
    for m in body["masks"]:
        assert m["encoding"] == "png"
        mask = decode_png_mask(m["data"])
        assert mask.shape == (300, 120)
        np.testing.assert_array_equal(mask, expected[m["structure"]])
        assert m["area_px"] == int(mask.sum()) > 0
        x, y, w, h = m["bbox"]
        assert mask[y : y + h, x : x + w].sum() == m["area_px"]
    assert body["execution_provider"] == "CPUExecutionProvider"
    assert {m["name"] for m in body["models"]} == set(structures_for_view("AP"))
    assert all(len(m["sha256"]) == 64 and m["validated"] is True for m in body["models"])
    assert {"decode", "preprocess", "inference", "postprocess"} <= set(body["timings_ms"])
    assert body["overlay_png"] is None
    assert r.headers["x-request-id"]


def test_rle_decodes_to_the_same_mask_as_png(client: TestClient) -> None:
    data = encode(spine_image(211, 97, seed=5), "JPEG", quality=92)
    png = post_segment(client, data, "a.jpg", view="LAT").json()
    rle = post_segment(client, data, "a.jpg", view="LAT", mask_format="rle").json()
    assert png["format"] == rle["format"] == "JPEG"
    for a, b in zip(png["masks"], rle["masks"], strict=True):
        assert b["encoding"] == "rle" and b["data"]["size"] == [211, 97]
        np.testing.assert_array_equal(decode_rle(b["data"]), decode_png_mask(a["data"]))
        assert a["area_px"] == b["area_px"] and a["bbox"] == b["bbox"]


def test_overlay_is_a_valid_png(client: TestClient) -> None:
    body = post_segment(client, encode(spine_image(300, 120)), view="AP", overlay=True).json()
    with Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))) as overlay:
        overlay.verify()
    with Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))) as overlay:
        assert overlay.format == "PNG" and overlay.size == (120, 300) and overlay.mode == "RGB"


def test_structures_subset_and_case_insensitive(client: TestClient) -> None:
    body = post_segment(client, encode(spine_image()), view="ap", structures="ap_vertebra, Ap_Pedicle").json()
    assert body["view"] == "AP"
    assert [m["structure"] for m in body["masks"]] == ["Ap_Vertebra", "Ap_Pedicle"]
    assert [m["name"] for m in body["models"]] == ["Ap_Vertebra", "Ap_Pedicle"]


def test_dicom_view_from_view_position(client: TestClient) -> None:
    img = (spine_image(120, 60).astype(np.uint16) * 64).astype(np.uint16)
    r = post_segment(client, make_dicom(img, view="LL"), "scan.dcm")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["view"] == "LAT" and body["format"] == "DICOM" and (body["height"], body["width"]) == (120, 60)
    # An explicit view wins, with a warning naming the disagreement.
    body = post_segment(client, make_dicom(img, view="LL"), "scan.dcm", view="AP").json()
    assert body["view"] == "AP" and any("ViewPosition says LAT" in w for w in body["warnings"])


def test_full_spine_film_with_default_limits(client: TestClient) -> None:
    r = post_segment(
        client, encode(tall_film(), "JPEG", quality=80), "film.jpg", view="AP", mask_format="rle", structures="Ap_Vertebra"
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (2500, 6500)
    assert decode_rle(body["masks"][0]["data"]).shape == (6500, 2500)


@pytest.mark.parametrize(("word", "view"), [("ap", "AP"), ("Lateral", "LAT"), ("pa", "AP"), ("LL", "LAT")])
def test_view_words_are_the_dicom_table(client: TestClient, word: str, view: str) -> None:
    # One table of view names (spine_engine.decoding.VIEW_NAMES) for the form field and DICOM's ViewPosition.
    r = post_segment(client, encode(spine_image(120, 60)), view=word, structures=structures_for_view(view)[0])
    assert r.status_code == 200, r.text
    assert r.json()["view"] == view
