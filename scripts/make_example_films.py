"""Write the README's Quick start films to docs/examples/: drawn, not taken from any dataset.

    python scripts/make_example_films.py            # docs/examples/synthetic_ap.jpg, synthetic_lat.jpg, synthetic_ap.dcm

The AP film is a drawing of an S-shaped column of 17 vertebral bodies (with pedicles, soft tissue, blur and
noise) that the committed `Ap_Vertebra` reads as a spine: it passes the spine check, all 17 vertebrae are
found and a Cobb angle is measured, so every Quick start call gets a real answer. It is not a radiograph of
anyone and its label means nothing clinically. The DICOM copy is a CR with the JPEG bytes encapsulated
(JPEG Baseline) and PixelSpacing, so /dicom/seg and /dicom/sr have what they need.
The output is deterministic (fixed seeds); tests/service/test_readme_quick_start.py runs the README's calls on these files.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT_DIR = Path(__file__).resolve().parents[1] / "docs" / "examples"
N_VERTEBRAE = 17


def _column(
    height: int, width: int, *, seed: int, sway: float, body_width: tuple[float, float], pedicles: bool, curve: str
) -> np.ndarray:
    """A column of 17 bodies whose centre follows `curve` ("S": one full sine, "C": half a sine), tilted with it."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (width, height), 30)
    draw = ImageDraw.Draw(img)
    draw.ellipse([width * 0.05, -height * 0.1, width * 0.95, height * 1.1], fill=75)  # soft tissue
    top, bottom = height * 0.05, height * 0.95
    pitch = (bottom - top) / N_VERTEBRAE
    cycles = 2.0 if curve == "S" else 1.0

    def centre_x(y: float) -> float:
        return width / 2 + width * sway * np.sin(cycles * np.pi * (y - top) / (bottom - top))

    for level in range(N_VERTEBRAE):
        cy = top + pitch * (level + 0.5)
        cx = centre_x(cy)
        tilt = -np.arctan((centre_x(cy + 1) - centre_x(cy - 1)) / 2)
        half_w = width * (body_width[0] + (body_width[1] - body_width[0]) * level / (N_VERTEBRAE - 1))
        half_h = pitch * 0.78 / 2  # the rest of the pitch is the disc
        cos, sin = np.cos(tilt), np.sin(tilt)
        outline = [(-half_w, -half_h), (half_w, -half_h), (half_w * 1.05, half_h), (-half_w * 1.05, half_h)]
        draw.polygon([(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in outline], fill=185)
        if pedicles:
            for side in (-0.55, 0.55):
                px, py = cx + side * half_w * cos, cy + side * half_w * sin
                draw.ellipse([px - half_w * 0.15, py - half_h * 0.35, px + half_w * 0.15, py + half_h * 0.35], fill=215)
    blurred = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)
    return np.clip(blurred + rng.normal(0, 5, blurred.shape), 0, 255).astype(np.uint8)


def ap_film() -> np.ndarray:
    return _column(1500, 600, seed=0, sway=0.12, body_width=(0.06, 0.105), pedicles=True, curve="S")


def lat_film() -> np.ndarray:
    return _column(1200, 500, seed=1, sway=0.08, body_width=(0.07, 0.11), pedicles=False, curve="C")


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def dicom_bytes(jpeg: bytes, rows: int, columns: int) -> bytes:
    """A CR image around the JPEG bytes (JPEG Baseline, no re-encoding), with PixelSpacing."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ComputedRadiographyImageStorage, JPEGBaseline8Bit, generate_uid

    # Fixed UIDs under pydicom's root, so the file does not change when regenerated.
    def uid(name: str) -> str:
        return generate_uid(entropy_srcs=["spine-xray example film", name])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Example", "SYNTH-0001", "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20260101", "120000", "", "", "1"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CR", 1, 1
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "SPINE", "AP", ["R", "F"]
    ds.Manufacturer = "spine-xray make_example_films.py (a drawing)"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [0.3, 0.3]
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder to write into (default docs/examples)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ap = ap_film()
    ap_jpeg = jpeg_bytes(ap)
    (args.out / "synthetic_ap.jpg").write_bytes(ap_jpeg)
    (args.out / "synthetic_lat.jpg").write_bytes(jpeg_bytes(lat_film()))
    (args.out / "synthetic_ap.dcm").write_bytes(dicom_bytes(ap_jpeg, *ap.shape))
    for name in ("synthetic_ap.jpg", "synthetic_lat.jpg", "synthetic_ap.dcm"):
        print(args.out / name, (args.out / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
