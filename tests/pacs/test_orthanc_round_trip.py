"""POST /dicomweb/studies/{uid}/analyze against a real Orthanc: synthetic DX radiographs (MONOCHROME1/2, 8/16 bit)
stored over STOW-RS, analysed through the API, the SEG and SR read back from Orthanc and checked with highdicom,
against /segment and with dciodvfy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from fastapi.testclient import TestClient
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import BasicTextSRStorage, ComprehensiveSRStorage, SegmentationStorage, generate_uid
from spine_dicom_testlib import dciodvfy, dx_dataset, radiograph_pixels, to_bytes
from spine_pacs_testlib import Orthanc
from spine_service_testlib import decode_rle, make_settings, post_segment, start_client

# (view, bits, photometric) of each study's radiographs: every bit depth and photometric interpretation appears.
STUDIES = {
    "ap8-m2_lat16-m1": [("AP", 8, "MONOCHROME2"), ("LL", 16, "MONOCHROME1")],
    "ap16-m1_lat8-m2": [("PA", 16, "MONOCHROME1"), ("RL", 8, "MONOCHROME2")],
}


def pacs_client(orthanc: Orthanc, password: str | None = None) -> DICOMwebClient:
    user, real_password = orthanc.auth
    return DICOMwebClient(orthanc.dicomweb, session=create_session_from_user_pass(user, password or real_password))


def stow(orthanc: Orthanc, datasets: list[Dataset]) -> None:
    for ds in datasets:
        ds.preamble = b"\0" * 128  # written as a Part 10 file (see service/dicom/dicomweb.py)
    answer = pacs_client(orthanc).store_instances(datasets)
    assert not answer.get("FailedSOPSequence"), answer


def text_report(study_uid: str) -> Dataset:
    """A non-image object in the study (Basic Text SR without content): skipped with its reason."""
    ds = dx_dataset(radiograph_pixels(8, "MONOCHROME2"), study_uid=study_uid)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.Modality = "SR"
    return ds


@pytest.fixture(scope="module")
def api(models_dir: Path, orthanc: Orthanc) -> Iterator[TestClient]:
    user, password = orthanc.auth
    client = start_client(
        make_settings(models_dir, dicomweb_url=orthanc.dicomweb, dicomweb_username=user, dicomweb_password=password)
    )
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


def segment_masks(api: TestClient, data: bytes) -> dict[str, np.ndarray]:
    response = post_segment(api, data, filename="xray.dcm", mask_format="rle")
    assert response.status_code == 200, response.text
    return {m["structure"]: decode_rle(m["data"]) for m in response.json()["masks"]}


@pytest.mark.parametrize("images", list(STUDIES.values()), ids=list(STUDIES))
def test_analyze_stores_seg_and_sr_that_read_back_valid(api: TestClient, orthanc: Orthanc, tmp_path: Path, images):
    study = generate_uid()
    sources = [dx_dataset(radiograph_pixels(b, p), photometric=p, view=v, study_uid=study) for v, b, p in images]
    other = text_report(study)
    stow(orthanc, [*sources, other])

    response = api.post(f"/dicomweb/studies/{study}/analyze")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["study_uid"] == study
    assert [s["sop_instance_uid"] for s in body["skipped"]] == [other.SOPInstanceUID]
    assert "Basic Text SR" in body["skipped"][0]["reason"] and "not a projection radiograph" in body["skipped"][0]["reason"]
    by_source = {r["sop_instance_uid"]: r for r in body["results"]}
    assert set(by_source) == {s.SOPInstanceUID for s in sources}
    assert sorted(r["view"] for r in body["results"]) == ["AP", "LAT"]
    classes = sorted(s["sop_class_uid"] for s in body["stored"])
    assert classes == sorted([SegmentationStorage] * len(sources) + [ComprehensiveSRStorage])

    pacs = pacs_client(orthanc)
    stored = {
        s["sop_instance_uid"]: pacs.retrieve_instance(study, s["series_instance_uid"], s["sop_instance_uid"])
        for s in body["stored"]
    }
    segs = {uid: hd.seg.Segmentation.from_dataset(ds) for uid, ds in stored.items() if ds.SOPClassUID == SegmentationStorage}
    for source in sources:
        seg = segs[by_source[source.SOPInstanceUID]["seg_sop_instance_uid"]]
        assert seg.StudyInstanceUID == study
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        expected = segment_masks(api, to_bytes(source))
        labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
        assert labels == list(expected)
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=False)
        for i, structure in enumerate(labels):
            np.testing.assert_array_equal(pixels[0, :, :, i].astype(bool), expected[structure], err_msg=structure)

    (sr_uid,) = [uid for uid, ds in stored.items() if ds.SOPClassUID == ComprehensiveSRStorage]
    sr = hd.sr.ComprehensiveSR.from_dataset(stored[sr_uid])
    (label_group,) = sr.content.get_image_measurement_groups()
    (finding,) = label_group.get_qualitative_evaluations()
    assert finding.value == (codes.SCT.Abnormal if body["label"] == "Damaged" else codes.SCT.Normal)
    assert label_group.get_measurements()[0].value == pytest.approx(body["score"], abs=1e-6)
    assert {r.referenced_sop_instance_uid for r in label_group.source_images} == {s.SOPInstanceUID for s in sources}
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == sum(len(r["per_mask"]) for r in body["results"])
    assert {g.referenced_segmentation_frame.referenced_sop_instance_uid for g in groups} == set(segs)

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; the objects read back, unverified")
    for uid, ds in stored.items():
        errors, _warnings = dciodvfy(to_bytes(ds), tmp_path)
        assert errors == [], f"{ds.SOPClassUID.name} {uid}: {errors}"


def test_unknown_study_is_a_404(api: TestClient):
    response = api.post(f"/dicomweb/studies/{generate_uid()}/analyze")
    assert response.status_code == 404 and response.json()["code"] == "study_not_found"


def test_a_study_without_radiographs_is_a_422_with_the_reasons(api: TestClient, orthanc: Orthanc):
    study = generate_uid()
    only = text_report(study)
    stow(orthanc, [only])
    response = api.post(f"/dicomweb/studies/{study}/analyze")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "no_radiographs"
    assert [s["sop_instance_uid"] for s in body["skipped"]] == [only.SOPInstanceUID]


def test_wrong_credentials_are_a_502_naming_the_pacs_status(models_dir: Path, orthanc: Orthanc):
    user, _password = orthanc.auth
    client = start_client(
        make_settings(models_dir, dicomweb_url=orthanc.dicomweb, dicomweb_username=user, dicomweb_password="wrong")
    )
    try:
        response = client.post(f"/dicomweb/studies/{generate_uid()}/analyze")
    finally:
        client.__exit__(None, None, None)
    assert response.status_code == 502
    assert response.json()["code"] == "pacs_error" and response.json()["pacs_status"] == 401


def test_a_radiograph_without_a_view_is_skipped_and_the_rest_analysed(api: TestClient, orthanc: Orthanc):
    study = generate_uid()
    ap = dx_dataset(radiograph_pixels(8, "MONOCHROME2"), view="AP", study_uid=study)
    unknown = dx_dataset(radiograph_pixels(8, "MONOCHROME2"), view=None, study_uid=study)
    stow(orthanc, [ap, unknown])
    response = api.post(f"/dicomweb/studies/{study}/analyze", data={"structures": "Ap_Vertebra"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["sop_instance_uid"] for r in body["results"]] == [ap.SOPInstanceUID]
    assert [m["structure"] for m in body["results"][0]["masks"]] == ["Ap_Vertebra"]
    (skipped,) = body["skipped"]
    assert skipped["sop_instance_uid"] == unknown.SOPInstanceUID and "ViewPosition" in skipped["reason"]
    assert len(body["stored"]) == 2  # one SEG, one SR


def test_the_seg_metadata_over_dicomweb_keeps_the_geometry_ohif_reads(api: TestClient, orthanc: Orthanc):
    """OHIF reads a SEG's shared functional groups from the DICOMweb metadata, where Orthanc drops a sequence whose
    items are empty: the film's pixel spacing and the orientation OHIF assumes for the film must be there."""
    film = dx_dataset(radiograph_pixels(8, "MONOCHROME2"), view="AP")
    stow(orthanc, [film])
    response = api.post(f"/dicomweb/studies/{film.StudyInstanceUID}/analyze")
    assert response.status_code == 200, response.text
    (seg,) = [s for s in response.json()["stored"] if s["sop_class_uid"] == SegmentationStorage]
    (metadata,) = pacs_client(orthanc).retrieve_series_metadata(film.StudyInstanceUID, seg["series_instance_uid"])
    shared = metadata["52009229"]["Value"][0]  # Shared Functional Groups Sequence
    assert shared["00289110"]["Value"][0]["00280030"]["Value"] == [float(v) for v in film.ImagerPixelSpacing]
    assert shared["00209116"]["Value"][0]["00200037"]["Value"] == [1, 0, 0, 0, 1, 0]
