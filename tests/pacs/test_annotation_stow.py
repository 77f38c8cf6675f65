"""POST /annotations with SPINE_DICOMWEB_URL set: a DICOM film's masks land in a real Orthanc as a MANUAL SEG that
references the film, with exactly the annotated pixels; a non-DICOM film is kept on disk and the sidecar says why
it has no SEG; a PACS that cannot be reached keeps nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import SegmentationStorage
from spine_dicom_testlib import dx_dataset, radiograph_pixels, to_bytes
from spine_pacs_testlib import Orthanc, free_port
from spine_service_testlib import encode, make_settings, start_client
from test_orthanc_round_trip import pacs_client, stow


def _mask(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) > 0.6


def _post(client: TestClient, film: bytes, name: str, masks: dict[str, np.ndarray], study_id: str):
    files = [("film", (name, film, "application/octet-stream"))]
    files += [("masks", (f"{s}.png", encode((m * 255).astype(np.uint8)), "image/png")) for s, m in masks.items()]
    form = {"view": "AP", "study_class": "Normal", "annotator": "dr-pacs", "study_id": study_id}
    return client.post("/annotations", data=form, files=files)


@pytest.fixture(scope="module")
def annotating(models_dir: Path, orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    user, password = orthanc.auth
    root = tmp_path_factory.mktemp("annotations")
    settings = make_settings(
        models_dir, annotations_dir=root, dicomweb_url=orthanc.dicomweb, dicomweb_username=user, dicomweb_password=password
    )
    client = start_client(settings)
    try:
        yield client, root
    finally:
        client.__exit__(None, None, None)


def test_dicom_film_annotation_is_a_manual_seg_in_orthanc(annotating: tuple[TestClient, Path], orthanc: Orthanc) -> None:
    client, root = annotating
    film = dx_dataset(radiograph_pixels(8, "MONOCHROME2"), view="AP")
    stow(orthanc, [film])  # the film is in the PACS, as a site's would be
    masks = {"Ap_Vertebra": _mask((300, 120), 1), "Ap_Pedicle": _mask((300, 120), 2)}
    r = _post(client, to_bytes(film), "film.dcm", masks, "pacs-1")
    assert r.status_code == 201, r.text
    dicom = r.json()["dicom"]
    assert dicom["stored"] is True and dicom["referenced_sop_instance_uid"] == film.SOPInstanceUID
    assert json.loads((root / "Normal/pacs-1/AP/annotation.json").read_text())["dicom"] == dicom

    pacs = pacs_client(orthanc)
    (found,) = pacs.search_for_instances(study_instance_uid=film.StudyInstanceUID, search_filters={"Modality": "SEG"})
    assert found["00080016"]["Value"] == [SegmentationStorage]
    seg_ds = pacs.retrieve_instance(film.StudyInstanceUID, dicom["series_instance_uid"], dicom["sop_instance_uid"])
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert [d.SegmentAlgorithmType for d in seg.SegmentSequence] == ["MANUAL", "MANUAL"]
    assert [d.SegmentLabel for d in seg.SegmentSequence] == list(masks)
    assert "dr-pacs" in seg.SegmentSequence[0].SegmentDescription
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == film.SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[film.SOPInstanceUID], segment_numbers=[1, 2], combine_segments=False
    )[0]
    for k, mask in enumerate(masks.values()):
        assert np.array_equal(pixels[..., k].astype(bool), mask)


def test_png_film_is_kept_without_a_seg_and_says_why(annotating: tuple[TestClient, Path]) -> None:
    client, root = annotating
    r = _post(client, encode(radiograph_pixels(8, "MONOCHROME2")), "film.png", {"Ap_Vertebra": _mask((300, 120), 3)}, "png-1")
    assert r.status_code == 201, r.text
    assert r.json()["dicom"] == {"stored": False, "reason": "the film is PNG, not DICOM: a SEG references a DICOM image"}
    assert (root / "Normal/png-1/AP/Ap_Vertebra.png").is_file()


def test_unreachable_pacs_keeps_nothing(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "annotations"
    client = start_client(
        make_settings(models_dir, annotations_dir=root, dicomweb_url=f"http://127.0.0.1:{free_port()}/dicom-web")
    )
    try:
        film = dx_dataset(radiograph_pixels(8, "MONOCHROME2"), view="AP")
        r = _post(client, to_bytes(film), "film.dcm", {"Ap_Vertebra": _mask((300, 120), 4)}, "gone-1")
        assert (r.status_code, r.json()["code"]) == (502, "pacs_unreachable")
        assert not any(p.is_file() for p in root.rglob("*"))
    finally:
        client.__exit__(None, None, None)
