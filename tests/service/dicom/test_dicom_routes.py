"""POST /dicom/seg and /dicom/sr: synthetic DX radiographs (MONOCHROME1/2, 8/16 bit) in, SEG/SR read back with
highdicom, masks and scores compared with /segment's and /classify's for the same file, dciodvfy on both."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.sr.codedict import codes
from spine_dicom_testlib import dciodvfy, dx_bytes, dx_dataset, radiograph_pixels, to_bytes
from spine_service_testlib import decode_rle, make_dicom, png_bytes, post_segment

from service.dicom.analysis import analyze_radiograph
from service.dicom.seg import STRUCTURE_CODES, build_segmentation
from service.dicom.source import read_dataset
from spine_core.manifest import Manifest, load_manifest, save_manifest
from spine_engine import ModelRegistry
from spine_engine.engine import Engine

VARIANTS = [(8, "MONOCHROME2"), (16, "MONOCHROME2"), (8, "MONOCHROME1"), (16, "MONOCHROME1")]
DICOM = "application/dicom"


def post_dicom(client: TestClient, path: str, data: bytes, **form: str):
    return client.post(path, files={"file": ("xray.dcm", data, DICOM)}, data=form)


def read(response) -> pydicom.Dataset:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM
    return pydicom.dcmread(io.BytesIO(response.content))


def needs_dciodvfy() -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")


def segment_masks(client: TestClient, data: bytes, **form: str) -> dict[str, np.ndarray]:
    response = post_segment(client, data, filename="xray.dcm", mask_format="rle", **form)
    assert response.status_code == 200, response.text
    return {m["structure"]: decode_rle(m["data"]) for m in response.json()["masks"]}


@pytest.mark.parametrize(("bits", "photometric"), VARIANTS)
def test_seg_masks_equal_segment_and_reference_the_source(
    client: TestClient, registry: ModelRegistry, bits: int, photometric: str
):
    source = dx_dataset(radiograph_pixels(bits, photometric), photometric=photometric, view="AP")
    data = to_bytes(source)
    seg = hd.seg.Segmentation.from_dataset(read(post_dicom(client, "/dicom/seg", data)))
    expected = segment_masks(client, data)

    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)

    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert labels == list(expected), "one segment per structure /segment returned, in its order"
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=False)
    assert pixels.shape == (1, source.Rows, source.Columns, len(labels))
    assert any(m.any() for m in expected.values()), "the test image must give non-empty masks"
    for i, structure in enumerate(labels):
        np.testing.assert_array_equal(pixels[0, :, :, i].astype(bool), expected[structure], err_msg=structure)


def test_seg_segments_are_coded_and_identify_their_model(client: TestClient, registry: ModelRegistry):
    seg = read(post_dicom(client, "/dicom/seg", dx_bytes()))
    for item in seg.SegmentSequence:
        structure = str(item.SegmentLabel)
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodingSchemeDesignator, prop.CodeValue) == ("SCT", STRUCTURE_CODES[structure].property_type.value)
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == codes.SCT.AnatomicalStructure.value
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        model = registry.models[structure]
        assert algo.AlgorithmName == structure and algo.AlgorithmVersion == str(model.entry.version)
        assert f"sha256={model.sha256}" in str(algo.AlgorithmParameters)
        assert "DEMONSTRATION" not in str(item.SegmentDescription)  # the test models are all `validated: true`


def test_seg_of_the_same_file_is_the_same_instance(client: TestClient):
    """Its UIDs derive from source and models: the SR of the same file can reference it."""
    data = dx_bytes()
    first, second = (read(post_dicom(client, "/dicom/seg", data)) for _ in range(2))
    assert first.SOPInstanceUID == second.SOPInstanceUID and first.SeriesInstanceUID == second.SeriesInstanceUID
    other = read(post_dicom(client, "/dicom/seg", dx_bytes()))
    assert other.SOPInstanceUID != first.SOPInstanceUID


def test_structures_and_view_fields(client: TestClient):
    data = dx_bytes(view=None)  # no ViewPosition: the view must be given
    refused = post_dicom(client, "/dicom/seg", data)
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_view"
    seg = read(post_dicom(client, "/dicom/seg", data, view="lat", structures="lat_vertebra"))
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == ["Lat_Vertebra"]


@pytest.mark.parametrize(("bits", "photometric"), [VARIANTS[0], VARIANTS[3]])
def test_sr_carries_the_classify_label_and_scores_tied_to_the_seg(client: TestClient, bits: int, photometric: str):
    source = dx_dataset(radiograph_pixels(bits, photometric), photometric=photometric, view="AP")
    data = to_bytes(source)
    sr = hd.sr.srread(io.BytesIO(post_dicom(client, "/dicom/sr", data).content))
    seg = read(post_dicom(client, "/dicom/seg", data))
    classify = client.post("/classify", files={"ap": ("xray.dcm", data, DICOM)}, data={"include_masks": "false"})
    assert classify.status_code == 200, classify.text
    expected = classify.json()

    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage and sr.StudyInstanceUID == source.StudyInstanceUID
    content = sr.content
    (study,) = content.get_image_measurement_groups()
    (finding,) = study.get_qualitative_evaluations()
    assert finding.value == (codes.SCT.Abnormal if expected["label"] == "Damaged" else codes.SCT.Normal)
    (probability,) = study.get_measurements()
    assert probability.value == pytest.approx(expected["score"], abs=1e-6)
    assert [r.referenced_sop_instance_uid for r in study.source_images] == [source.SOPInstanceUID]

    per_mask = {m["structure"]: m["p_damaged"] for m in expected["per_mask"]}
    groups = content.get_planar_roi_measurement_groups()
    assert len(groups) == len(per_mask)
    numbers = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    for group in groups:
        frame = group.referenced_segmentation_frame
        assert frame.referenced_sop_instance_uid == seg.SOPInstanceUID, "the SR points at the SEG /dicom/seg returns"
        structure = numbers[frame.referenced_frame_numbers[0]]  # frame n holds segment n
        assert frame.source_image_for_segmentation.referenced_sop_instance_uid == source.SOPInstanceUID
        (measurement,) = group.get_measurements()
        assert measurement.value == pytest.approx(per_mask[structure], abs=1e-6)


def test_sr_of_a_single_structure(client: TestClient):
    """One segment: highdicom puts its identification in the shared functional group; the SR still finds its frame."""
    data = dx_bytes(view="LL")
    response = post_dicom(client, "/dicom/sr", data, structures="Lat_Vertebra")
    assert response.status_code == 200, response.text
    sr = hd.sr.srread(io.BytesIO(response.content))
    seg = read(post_dicom(client, "/dicom/seg", data, structures="Lat_Vertebra"))
    (group,) = sr.content.get_planar_roi_measurement_groups()
    assert group.referenced_segmentation_frame.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert group.referenced_segmentation_frame.referenced_frame_numbers == [1]


def test_demonstration_models_are_flagged_in_the_segment_description(models_dir: Path, tmp_path: Path):
    shutil.copytree(models_dir, tmp_path / "models")
    manifest = load_manifest(tmp_path / "models")
    entries = [
        e.model_copy(update={"validated": e.name != "Ap_Pedicle", "notes": "trained on one study"}) for e in manifest.models
    ]
    save_manifest(Manifest(created=manifest.created, models=entries), tmp_path / "models")
    demo = Engine(ModelRegistry.load(tmp_path / "models", providers=["CPUExecutionProvider"], intra_op_threads=1))
    data = dx_bytes()
    by_default = build_segmentation(analyze_radiograph(demo, read_dataset(data), data, classify=False))
    assert "Ap_Pedicle" not in {str(s.SegmentLabel) for s in by_default.SegmentSequence}  # demonstrations run when named
    named = ("Ap_Vertebra", "Ap_Pedicle")
    seg = build_segmentation(analyze_radiograph(demo, read_dataset(data), data, structures=named, classify=False))
    text = {str(s.SegmentLabel): str(s.SegmentDescription) for s in seg.SegmentSequence}
    assert "DEMONSTRATION MODEL, NOT VALIDATED" in text["Ap_Pedicle"] and "trained on one study" in text["Ap_Pedicle"]
    assert "DEMONSTRATION" not in text["Ap_Vertebra"]
    params = {
        str(s.SegmentLabel): str(s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters)
        for s in seg.SegmentSequence
    }
    assert "validated=false" in params["Ap_Pedicle"] and "validated=true" in params["Ap_Vertebra"]


@pytest.mark.parametrize(("bits", "photometric"), VARIANTS)
def test_dciodvfy_finds_no_error_in_seg_or_sr(client: TestClient, tmp_path: Path, bits: int, photometric: str):
    needs_dciodvfy()
    data = to_bytes(dx_dataset(radiograph_pixels(bits, photometric), photometric=photometric, view="AP"))
    for path in ("/dicom/seg", "/dicom/sr"):
        response = post_dicom(client, path, data)
        assert response.status_code == 200, response.text
        errors, _warnings = dciodvfy(response.content, tmp_path)
        assert errors == [], f"{path}: {errors}"


# --------------------------------------------------------------------------- bad input


def _ct() -> bytes:
    ds = dx_dataset(radiograph_pixels(16, "MONOCHROME2"))
    ds.Modality = "CT"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    return to_bytes(ds)


def _with(**attributes: str) -> bytes:
    ds = dx_dataset(radiograph_pixels(8, "MONOCHROME2"))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def _no_pixels() -> bytes:
    ds = dx_dataset(radiograph_pixels(8, "MONOCHROME2"))
    del ds.PixelData
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (png_bytes(), 415, "not_dicom"),
        (b"", 422, "empty_file"),
        (_no_pixels(), 422, "no_pixel_data"),
        (_ct(), 422, "not_a_radiograph"),
        (make_dicom(np.zeros((64, 32), np.uint8), view="AP"), 422, "dicom_missing_attribute"),  # no study or series
        (dx_bytes()[:6000], 422, "corrupt_image"),  # pixel data cut short
        (_with(StudyInstanceUID="not.a.uid"), 422, "dicom_invalid_uid"),
        (_with(PatientSex="X"), 422, "dicom_not_encodable"),  # highdicom refuses to copy it
        (_with(StudyDate="notadate"), 422, "dicom_not_encodable"),
    ],
    ids=["png", "empty", "no-pixel-data", "ct", "minimal-dicom", "truncated", "bad-uid", "bad-sex", "bad-date"],
)
@pytest.mark.parametrize("path", ["/dicom/seg", "/dicom/sr"])
def test_bad_input_is_a_clear_4xx(client: TestClient, path: str, data: bytes, status: int, code: str):
    response = post_dicom(client, path, data)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"]


def test_a_radiograph_without_uids_is_refused_with_their_names(client: TestClient):
    ds = dx_dataset(radiograph_pixels(8, "MONOCHROME2"))
    del ds.StudyInstanceUID
    response = post_dicom(client, "/dicom/seg", to_bytes(ds))
    assert response.status_code == 422
    assert response.json()["code"] == "dicom_missing_attribute" and response.json()["missing"] == ["StudyInstanceUID"]


@pytest.mark.parametrize("path", ["/dicom/seg", "/dicom/sr"])
def test_a_radiograph_without_patient_and_study_details_still_gives_valid_objects(client: TestClient, tmp_path: Path, path: str):
    """A file that omits the Type 2 patient/study attributes (common in the wild): the SEG/SR carry them empty."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(radiograph_pixels(8, "MONOCHROME2"), view="AP")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    assert "PatientID" not in ds and "StudyDate" not in ds
    out = read(post_dicom(client, path, to_bytes(ds)))
    assert out.PatientID == "" and out.StudyInstanceUID == ds.StudyInstanceUID
    if shutil.which("dciodvfy") is not None:
        buf = io.BytesIO()
        out.save_as(buf, enforce_file_format=True)
        errors, _warnings = dciodvfy(buf.getvalue(), tmp_path)
        assert errors == []
