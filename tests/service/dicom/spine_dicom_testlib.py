"""Synthetic DX radiographs (pydicom) for the DICOM SEG/SR and PACS tests, and the `dciodvfy` check.

A uniquely named module (pytest's prepend import mode needs unique basenames across tests/). The tiny models
and images come from tests/service/spine_service_testlib.py, put on sys.path here so tests/pacs can use both.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

SERVICE_TESTS = Path(__file__).resolve().parents[1]
if str(SERVICE_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVICE_TESTS))

from spine_service_testlib import spine_image  # noqa: E402

PATIENT_ORIENTATION = {"AP": ["L", "F"], "LL": ["P", "F"]}


def radiograph_pixels(bits: int, photometric: str, height: int = 300, width: int = 120, seed: int = 0) -> np.ndarray:
    """spine_image at 8 or 16 bits; for MONOCHROME1 stored inverted, so it displays (and decodes) as the same film."""
    img = spine_image(height, width, seed).astype(np.float64) / 255.0
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    if bits == 8:
        return np.round(img * 255).astype(np.uint8)
    return np.round(img * 4095).astype(np.uint16)  # 12 bits stored in 16 allocated


def dx_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    view: str | None = "AP",
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "SPINE-TEST-1",
) -> Dataset:
    """A Digital X-Ray Image (For Presentation) dataset around `pixels` (uint8 / uint16 holding 12 bits)."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DigitalXRayImageStorageForPresentation, sop_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Spine", patient_id, "", "O"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.Manufacturer = "spine-xray tests"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "SPINE"
    ds.ImageLaterality = "U"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = codes.SCT.Spine.value, "SCT", codes.SCT.Spine.meaning
    ds.AnatomicRegionSequence = Sequence([region])
    if view is not None:
        ds.ViewPosition = view
    ds.PatientOrientation = PATIENT_ORIENTATION.get(view or "AP", ["L", "F"])
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = Sequence([])
    bits = 8 if pixels.dtype == np.uint8 else 16
    stored = 8 if bits == 8 else 12
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, 0
    ds.WindowCenter, ds.WindowWidth = (2**stored) / 2, 2**stored
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dx_bytes(bits: int = 8, photometric: str = "MONOCHROME2", view: str | None = "AP", **kw: object) -> bytes:
    return to_bytes(dx_dataset(radiograph_pixels(bits, photometric), photometric=photometric, view=view, **kw))  # type: ignore[arg-type]


def dciodvfy(data: bytes, tmp_path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy (dicom3tools) reports for `data`; the caller skips when it is not installed."""
    tool = shutil.which("dciodvfy")
    assert tool is not None
    path = tmp_path / f"object-{generate_uid()}.dcm"
    path.write_bytes(data)
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]
