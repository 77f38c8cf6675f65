"""A row is /classify's answer for that film, flattened: checked against the HTTP API itself."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from spine_batch_testlib import CORRUPT_FILM, GOOD_FILMS
from spine_service_testlib import make_settings, start_client

from spine_batch.rows import RowOptions, classify_item, error_fields, flatten_response
from spine_batch.sources import Item, source_items
from spine_engine.engine import Engine

# The view each film is sent as: the DICOM's own where it has one, AP (--view) for the rest.
VIEWS = {"series/lat.dcm": "LAT"}


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    c = start_client(make_settings(models_dir))
    try:
        yield c
    finally:
        c.__exit__(None, None, None)


def _post(client: TestClient, path: Path, view: str):
    form = {"include_masks": "true", "mask_format": "rle"}
    return client.post("/classify", files={view.lower(): (path.name, path.read_bytes())}, data=form)


@pytest.mark.parametrize("key", GOOD_FILMS)
def test_row_equals_the_http_answer_flattened(client: TestClient, loaded_engine: Engine, films: Path, key: str) -> None:
    row = classify_item(loaded_engine, Item(key=key, path=str(films / key)), RowOptions(default_view="AP"))
    view = VIEWS.get(key, "AP")
    response = _post(client, films / key, view)
    assert response.status_code == 200, response.text
    expected = flatten_response(response.json())
    assert {k: row[k] for k in expected} == expected
    assert (row["path"], row["view"], row["status"], row["error_code"]) == (key, view, "ok", None)
    structures = [m["structure"] for m in response.json()["per_mask"]]
    assert structures and all(f"p_damaged.{s}" in row and row[f"area_px.{s}"] > 0 for s in structures)


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [("text.png", b"not an image", 415, "unsupported_media_type"), ("empty.jpg", b"", 422, "empty_file")],
)
def test_bad_files_are_the_http_errors_as_rows(
    client: TestClient, loaded_engine: Engine, tmp_path: Path, name: str, data: bytes, status: int, code: str
) -> None:
    (tmp_path / name).write_bytes(data)
    row = classify_item(loaded_engine, Item(key=name, path=str(tmp_path / name)), RowOptions(default_view="AP"))
    response = _post(client, tmp_path / name, "AP")
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert (row["error_status"], row["error_code"], row["error_message"]) == (status, code, response.json()["detail"])


def test_a_corrupt_film_is_the_http_error_as_a_row(client: TestClient, loaded_engine: Engine, films: Path) -> None:
    row = classify_item(loaded_engine, Item(key=CORRUPT_FILM, path=str(films / CORRUPT_FILM)), RowOptions(default_view="AP"))
    response = _post(client, films / CORRUPT_FILM, "AP")
    body = response.json()
    assert response.status_code == 422 and body["code"] == "corrupt_image"
    assert (row["status"], row["error_code"], row["error_status"], row["error_message"]) == (
        "error",
        body["code"],
        response.status_code,
        body["detail"],
    )
    assert "label" not in row


def test_missing_file_and_unknown_view_are_error_rows(loaded_engine: Engine, films: Path, tmp_path: Path) -> None:
    gone = classify_item(loaded_engine, Item(key="gone.png", path=str(tmp_path / "gone.png")), RowOptions(default_view="AP"))
    assert (gone["status"], gone["error_code"]) == ("error", "read_error")
    no_view = classify_item(loaded_engine, Item(key="a.png", path=str(films / "a.png")), RowOptions())
    assert (no_view["error_code"], no_view["error_status"]) == ("unknown_view", 422)
    bad_view = classify_item(loaded_engine, Item(key="a.png", path=str(films / "a.png"), view="oblique"), RowOptions())
    assert (bad_view["error_code"], bad_view["view"]) == ("unknown_view", "oblique")


def test_an_unexpected_exception_is_an_internal_error_row() -> None:
    fields = error_fields(RuntimeError("boom"))
    assert fields == {
        "status": "error",
        "error_code": "internal_error",
        "error_status": 500,
        "error_message": "RuntimeError: boom",
    }


def test_fields_the_service_adds_become_columns_without_code_changes() -> None:
    """A response with fields the API may add: new scalars, lists and objects all land somewhere sensible."""
    response = {
        "label": "Damaged",
        "score": 0.9,
        "p_damaged": 0.9,
        "threshold": 0.5,
        "aggregation": "mean",
        "decided_by": ["Ap_Vertebra"],
        "excluded": [{"structure": "Ap_Pedicle", "reason": "demonstration"}],
        "rules": {"mean": {"label": "Damaged", "p_damaged": 0.9}},
        "per_mask": [{"structure": "Ap_Vertebra", "view": "AP", "p_normal": 0.1, "p_damaged": 0.9, "validated": True}],
        "views": [{"view": "AP", "width": 10, "height": 20, "format": "PNG", "masks": []}],
        "cobb": {"angles_deg": [10.0, 42.1, 20.0], "max_deg": 42.1, "curve": "S", "curves": [{"name": "mt", "angle_deg": 42.1}]},
        "vertebrae": None,
        "models": [{"name": "Ap_Vertebra", "version": "2", "precision": "int8"}],
        "execution_provider": "CPUExecutionProvider",
        "timings_ms": {"total": 5.0},
        "warnings": [],
    }
    row = flatten_response(response)
    assert row["decided_by"] == ["Ap_Vertebra"] and row["threshold"] == 0.5
    assert row["rules.mean.label"] == "Damaged" and row["rules.mean.p_damaged"] == 0.9
    assert row["p_damaged.Ap_Vertebra"] == 0.9 and row["validated.Ap_Vertebra"] is True
    assert row["cobb.max_deg"] == 42.1 and row["cobb.angles_deg"] == [10.0, 42.1, 20.0] and row["cobb.curve"] == "S"
    assert row["cobb.curves"] == '[{"name":"mt","angle_deg":42.1}]' and row["excluded"].startswith('[{"structure"')
    assert "vertebrae" not in row and "timings_ms.total" not in row  # null: absent; timings: not results
    assert row["models"] == ["Ap_Vertebra:2"] and row["model_precisions"] == ["int8"]
    assert (row["width"], row["height"], row["format"]) == (10, 20, "PNG")


def test_masks_dir_gets_each_mask_as_a_png_of_the_row_s_area(loaded_engine: Engine, films: Path, tmp_path: Path) -> None:
    options = RowOptions(default_view="AP", masks_dir=str(tmp_path))
    item = next(i for i in source_items(films) if i.key == "series/d.png")
    row = classify_item(loaded_engine, item, options)
    pngs = sorted((tmp_path / "series_d.png").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(k.split(".", 1)[1] for k in row if k.startswith("area_px."))
    for png in pngs:
        mask = np.asarray(Image.open(io.BytesIO(png.read_bytes())))
        assert mask.shape == (row["height"], row["width"])
        assert int(np.count_nonzero(mask)) == row[f"area_px.{png.stem}"]


def test_without_masks_the_scores_are_the_same_and_there_are_no_areas(loaded_engine: Engine, films: Path) -> None:
    item = Item(key="a.png", path=str(films / "a.png"))
    with_masks = classify_item(loaded_engine, item, RowOptions(default_view="AP"))
    label_only = classify_item(loaded_engine, item, RowOptions(default_view="AP", include_masks=False))
    assert not any(k.startswith(("area_px.", "bbox.")) for k in label_only)
    assert {k: v for k, v in with_masks.items() if not k.startswith(("area_px.", "bbox."))} == label_only
