"""POST/GET /annotations: the course layout on disk, the sidecar, all-or-nothing writes, the `annotate` scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from spine_service_testlib import encode, make_settings, spine_image, start_client

from training.datasets import read_course_dataset

FILM = spine_image(300, 120)
KEY, ANNOTATE_KEY = "plain-key-0123456789", "annotate-key-0123456789"


def _mask(seed: int = 0, shape: tuple[int, int] = FILM.shape) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape) > 0.7


def _form(view: str = "AP", cls: str = "Damaged", **fields: str) -> dict[str, str]:
    return {"view": view, "study_class": cls, "annotator": "dr-test", **fields}


def _files(masks: dict[str, np.ndarray], film: bytes | None = None) -> list[tuple[str, tuple[str, bytes, str]]]:
    out = [("film", ("film.png", film if film is not None else encode(FILM), "image/png"))]
    for name, mask in masks.items():
        out.append(("masks", (f"{name}.png", encode((mask * 255).astype(np.uint8)), "image/png")))
    return out


@pytest.fixture
def open_client(models_dir: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    root = tmp_path / "annotations"
    c = start_client(make_settings(models_dir, annotations_dir=root))
    try:
        yield c, root
    finally:
        c.__exit__(None, None, None)


def test_saved_view_is_course_layout_with_exact_pixels_and_sidecar(open_client: tuple[TestClient, Path]) -> None:
    client, root = open_client
    masks = {"Ap_Vertebra": _mask(1), "Ap_Pedicle": _mask(2)}
    provenance = {"Ap_Vertebra": {"pre_annotation": {"source": "model", "model": "Ap_Vertebra", "model_version": "1"}}}
    r = client.post(
        "/annotations",
        data=_form(study_id="site-001", patient_id="p1", provenance=json.dumps(provenance)),
        files=_files(masks),
    )
    assert r.status_code == 201, r.text
    assert r.json()["study_id"] == "site-001"
    view = root / "Damaged" / "site-001" / "AP"
    assert sorted(p.name for p in view.iterdir()) == ["AP.jpg", "Ap_Pedicle.png", "Ap_Vertebra.png", "annotation.json"]
    for name, mask in masks.items():
        with Image.open(view / f"{name}.png") as img:
            assert img.mode == "1"
            assert np.array_equal(np.asarray(img), mask)
    sidecar = json.loads((view / "annotation.json").read_text())
    assert sidecar["annotator"] == "dr-test" and sidecar["patient_id"] == "p1" and sidecar["class"] == "Damaged"
    assert sidecar["structures"]["Ap_Vertebra"]["pre_annotation"]["model"] == "Ap_Vertebra"
    assert sidecar["structures"]["Ap_Pedicle"]["pixels"] == int(masks["Ap_Pedicle"].sum())
    # The training reader takes it as it takes the course data set.
    (sample,) = read_course_dataset(root)
    assert sample.study == "Damaged/site-001" and sample.view == "AP" and sorted(sample.mask_paths) == sorted(masks)
    assert np.array_equal(sample.mask("Ap_Vertebra"), masks["Ap_Vertebra"])
    # Listed and returned.
    listed = client.get("/annotations").json()["studies"]
    assert listed == [
        {
            "study_id": "site-001",
            "class": "Damaged",
            "views": {
                "AP": {"structures": ["Ap_Pedicle", "Ap_Vertebra"], "annotator": "dr-test", "saved_at": sidecar["saved_at"]}
            },
        }
    ]
    one = client.get("/annotations/site-001").json()
    assert one["views"]["AP"] == sidecar


def test_jpeg_film_is_stored_unchanged_and_lat_view_joins_the_study(open_client: tuple[TestClient, Path]) -> None:
    client, root = open_client
    jpeg = encode(np.stack([FILM] * 3, axis=-1), "JPEG", quality=90)
    r = client.post("/annotations", data=_form(cls="Normal", study_id="s2"), files=_files({"Ap_Vertebra": _mask()}, jpeg))
    assert r.status_code == 201, r.text
    assert (root / "Normal/s2/AP/AP.jpg").read_bytes() == jpeg
    lat = {f"Lat_{s}": _mask(i) for i, s in enumerate(["Vertebra", "Disk_Height", "Spinous_Process"])}
    r = client.post("/annotations", data=_form("LAT", "Normal", study_id="s2"), files=_files(lat))
    assert r.status_code == 201, r.text
    assert sorted(client.get("/annotations/s2").json()["views"]) == ["AP", "LAT"]
    # Saving a view again replaces it whole.
    r = client.post("/annotations", data=_form(cls="Normal", study_id="s2"), files=_files({"Ap_Pedicle": _mask(5)}))
    assert r.status_code == 201
    assert sorted(p.name for p in (root / "Normal/s2/AP").iterdir()) == ["AP.jpg", "Ap_Pedicle.png", "annotation.json"]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"masks": {"Lat_Vertebra": _mask()}}, 422, "unknown_structure"),
        ({"masks": {"Ap_Vertebra": _mask(shape=(200, 120))}}, 422, "mask_size_mismatch"),
        ({"film": b"not an image at all"}, 415, "unsupported_media_type"),
        ({"form": {"study_id": "../escape"}}, 422, "invalid_study_id"),
        ({"form": {"provenance": '{"Ap_Vertebra": {"edited_share": 2}}'}}, 422, "validation_error"),
        ({"form": {"study_class": "Broken"}}, 422, "validation_error"),
    ],
)
def test_bad_uploads_are_4xx_and_leave_nothing(
    open_client: tuple[TestClient, Path], change: dict, status: int, code: str
) -> None:
    client, root = open_client
    masks = change.get("masks", {"Ap_Vertebra": _mask(), "Ap_Pedicle": _mask(3)})
    form = {**_form(), **change.get("form", {})}
    r = client.post("/annotations", data=form, files=_files(masks, change.get("film")))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert not any(p.is_file() for p in root.rglob("*")), "a refused upload left files behind"


def test_a_mask_that_fails_after_the_first_leaves_no_half_view(open_client: tuple[TestClient, Path]) -> None:
    client, root = open_client
    files = _files({"Ap_Vertebra": _mask()})
    files.append(("masks", ("Ap_Pedicle.png", b"\x89PNG\r\n\x1a\ntruncated", "image/png")))
    r = client.post("/annotations", data=_form(study_id="half"), files=files)
    assert (r.status_code, r.json()["code"]) == (422, "corrupt_image")
    assert not (root / "Damaged" / "half").exists()
    assert client.get("/annotations").json()["studies"] == []


def test_one_study_one_class(open_client: tuple[TestClient, Path]) -> None:
    client, _ = open_client
    assert client.post("/annotations", data=_form(study_id="c1"), files=_files({"Ap_Vertebra": _mask()})).status_code == 201
    r = client.post("/annotations", data=_form("LAT", "Normal", study_id="c1"), files=_files({"Lat_Vertebra": _mask()}))
    assert (r.status_code, r.json()["code"]) == (409, "annotation_conflict")


def test_unknown_study_and_unconfigured_folder_are_404(open_client: tuple[TestClient, Path], models_dir: Path) -> None:
    client, _ = open_client
    r = client.get("/annotations/nothing-here")
    assert (r.status_code, r.json()["code"]) == (404, "annotation_not_found")
    plain = start_client(make_settings(models_dir))
    try:
        for r in (plain.get("/annotations"), plain.post("/annotations", data=_form(), files=_files({"Ap_Vertebra": _mask()}))):
            assert (r.status_code, r.json()["code"]) == (404, "annotations_not_configured")
    finally:
        plain.__exit__(None, None, None)


def test_writes_need_the_annotate_scope_when_keys_are_on(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "ann"
    settings = make_settings(models_dir, annotations_dir=root, api_keys=KEY, scoped_api_keys=f"annotate:{ANNOTATE_KEY}")
    client = start_client(settings)
    try:
        files = _files({"Ap_Vertebra": _mask()})
        assert client.post("/annotations", data=_form(), files=files).status_code == 401
        r = client.post("/annotations", data=_form(), files=files, headers={"X-API-Key": KEY})
        assert (r.status_code, r.json()["code"]) == (403, "forbidden")
        assert not root.exists() or not any(root.rglob("*.png"))
        r = client.post("/annotations", data=_form(), files=files, headers={"Authorization": f"Bearer {ANNOTATE_KEY}"})
        assert r.status_code == 201, r.text
        # Reads keep today's rule: any valid key; the annotate key is a valid key everywhere.
        assert client.get("/annotations", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/models", headers={"X-API-Key": ANNOTATE_KEY}).status_code == 200
        assert client.get("/annotations").status_code == 401
    finally:
        client.__exit__(None, None, None)


def test_unknown_scope_is_refused_at_start(models_dir: Path) -> None:
    from service.main import create_app

    with pytest.raises(ValueError, match="scope"):
        create_app(make_settings(models_dir, scoped_api_keys="write:abc"))
