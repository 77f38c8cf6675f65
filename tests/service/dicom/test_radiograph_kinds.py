"""SEG and SR pass dciodvfy with 0 errors for every kind of radiograph a PACS holds: CR and DX, MONOCHROME1 and 2,
with and without PixelSpacing / ImagerPixelSpacing, with and without a frame of reference; the SEG carries the
geometry OHIF needs to open it wherever the film states a pixel spacing."""

from __future__ import annotations

import io
import itertools
import shutil
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset
from pydicom.uid import ComputedRadiographyImageStorage, generate_uid
from spine_dicom_testlib import dciodvfy, dx_dataset, radiograph_pixels, to_bytes

pytestmark = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed: .ci/run does")

SPACINGS = ["none", "PixelSpacing", "ImagerPixelSpacing", "both"]
DX_ONLY = ("PresentationIntentType", "DetectorType", "PositionerType", "AcquisitionContextSequence", "ImageLaterality")
KINDS = list(itertools.product(["CR", "DX"], ["MONOCHROME1", "MONOCHROME2"], SPACINGS, [False, True]))


def radiograph(modality: str, photometric: str, spacing: str, frame_of_reference: bool) -> Dataset:
    """A DX (For Presentation) or CR dataset of the same film, with the spacing and frame of reference asked for."""
    ds = dx_dataset(radiograph_pixels(8, photometric), photometric=photometric, view="AP")
    if modality == "CR":
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
        ds.Modality = "CR"
        for keyword in DX_ONLY:
            delattr(ds, keyword)
    del ds.ImagerPixelSpacing
    if spacing in ("PixelSpacing", "both"):
        ds.PixelSpacing = [0.15, 0.15]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
    if spacing in ("ImagerPixelSpacing", "both"):
        ds.ImagerPixelSpacing = [0.2, 0.2]
    if frame_of_reference:
        ds.FrameOfReferenceUID = generate_uid()
        ds.PositionReferenceIndicator = ""
    return ds


@pytest.mark.parametrize(
    ("modality", "photometric", "spacing", "frame_of_reference"),
    KINDS,
    ids=[f"{m}-{p}-{s}-{'for' if f else 'nofor'}" for m, p, s, f in KINDS],
)
def test_seg_and_sr_have_no_dciodvfy_error(
    client: TestClient, tmp_path: Path, modality: str, photometric: str, spacing: str, frame_of_reference: bool
) -> None:
    source = radiograph(modality, photometric, spacing, frame_of_reference)
    data = to_bytes(source)
    for path in ("/dicom/seg", "/dicom/sr"):
        response = client.post(path, files={"file": ("xray.dcm", data, "application/dicom")})
        assert response.status_code == 200, f"{path}: {response.text}"
        errors, _warnings = dciodvfy(response.content, tmp_path)
        assert errors == [], f"{path}: {errors}"
        out = pydicom.dcmread(io.BytesIO(response.content))
        assert out.StudyInstanceUID == source.StudyInstanceUID
        if path == "/dicom/seg":
            check_viewer_geometry(out, source)


def check_viewer_geometry(seg: Dataset, source: Dataset) -> None:
    """A projection film's SEG states the film's pixel spacing and the orientation OHIF assumes for the film in its
    shared functional groups (OHIF 3.13 opens no SEG without them), still claims no frame of reference, and highdicom
    reads it back (it takes a Pixel Measures item only with Slice Thickness)."""
    assert "FrameOfReferenceUID" not in seg
    hd.seg.Segmentation.from_dataset(seg)
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    if spacing is None:  # nothing true to write
        assert "PlaneOrientationSequence" not in shared
        return
    measures = shared.PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [float(v) for v in spacing]
    assert float(measures.SliceThickness) == 1.0  # nominal: a projection has none
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]


def test_the_source_files_are_the_kinds_named() -> None:
    """The generator really varies what the ids say (else the matrix above would test one kind 32 times)."""
    cr = radiograph("CR", "MONOCHROME1", "both", True)
    assert (cr.Modality, cr.SOPClassUID, cr.PhotometricInterpretation) == ("CR", ComputedRadiographyImageStorage, "MONOCHROME1")
    assert "PixelSpacing" in cr and "ImagerPixelSpacing" in cr and "FrameOfReferenceUID" in cr
    dx = radiograph("DX", "MONOCHROME2", "none", False)
    assert dx.Modality == "DX" and "PixelSpacing" not in dx and "ImagerPixelSpacing" not in dx and "FrameOfReferenceUID" not in dx
