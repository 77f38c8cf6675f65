"""Uploaded bytes -> pixel array: PNG (8/16-bit), JPEG, TIFF and DICOM, with size limits checked first.

Every failure is an `ImageDecodeError` (a `SpineError`) carrying the HTTP status and a message meant for the caller;
nothing here imports the web framework.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from spine_engine.errors import SpineError

DICOM_MAGIC_OFFSET = 128
SUPPORTED = "PNG (8/16-bit), JPEG, TIFF or DICOM"
Image.init()
# Allow-list (no EPS/Ghostscript or other exotic parsers); MPO is how some Pillow versions name camera JPEGs.
PILLOW_FORMATS = tuple(f for f in ("PNG", "JPEG", "MPO", "TIFF", "BMP") if f in Image.OPEN)

# Magic bytes of the formats we read: a file that starts like one but cannot be opened is corrupt (422), not foreign (415).
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",  # BigTIFF
    b"MM\x00+": "TIFF",
    b"BM": "BMP",
}

# Projection radiography: computed radiography, digital X-ray, radiographic imaging (DICOM Modality defined terms).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG"})

# Words for a view -> AP / LAT: the DICOM ViewPosition (0018,5101) defined terms; a request's `view` accepts them too.
VIEW_NAMES = {"AP": "AP", "PA": "AP", "LL": "LAT", "RL": "LAT", "LAT": "LAT", "LATERAL": "LAT", "LLD": "LAT", "RLD": "LAT"}


class ImageDecodeError(SpineError):
    status_code = 422
    code = "invalid_image"


class EmptyFileError(ImageDecodeError):
    code = "empty_file"


class UnsupportedImageError(ImageDecodeError):
    status_code = 415
    code = "unsupported_media_type"


class CorruptImageError(ImageDecodeError):
    code = "corrupt_image"


class NoPixelDataError(CorruptImageError):
    code = "no_pixel_data"


class ImageTooLargeError(ImageDecodeError):
    status_code = 413
    code = "image_too_large"


@dataclass
class DecodedImage:
    pixels: np.ndarray  # HxW (gray, any numeric dtype) or HxWx3 (RGB)
    format: str  # PNG, JPEG, TIFF, DICOM, ...
    mode: str  # source mode, e.g. "L", "I;16", "RGB", "MONOCHROME1"
    view: str | None = None  # AP/LAT from DICOM ViewPosition when present
    modality: str | None = None  # DICOM Modality (0008,0060) when present: CT, MR... are not radiographs
    sop_class_uid: str | None = None  # DICOM SOP Class UID when present (names the object in a refusal)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _check_pixels(width: int, height: int, frames: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise CorruptImageError(f"image declares {width}x{height} pixels")
    if width * height * max(frames, 1) > max_pixels:
        raise ImageTooLargeError(
            f"image declares {width}x{height} pixels{f' x {frames} frames' if frames > 1 else ''}, "
            f"over the limit of {max_pixels:,} pixels (SPINE_MAX_IMAGE_PIXELS)"
        )


def sniff_format(data: bytes) -> str | None:
    """The format the first bytes announce (PNG, JPEG, TIFF, BMP, DICOM), or None."""
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "DICOM"
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def _check_png_header(data: bytes, max_pixels: int) -> None:
    """PNG: the pixel limit straight from IHDR (bytes 16-24), before any parser sees the file."""
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        _check_pixels(width, height, 1, max_pixels)


def _check_finite(pixels: np.ndarray, fmt: str) -> None:
    # A NaN or infinity (float TIFF, an absurd DICOM rescale) would silently turn into empty masks.
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise CorruptImageError(f"the {fmt} image has non-finite pixel values (NaN or infinity)")


def decode_image(data: bytes, max_pixels: int, filename: str | None = None) -> DecodedImage:
    """Decode an upload. The pixel limit is checked from the header, before any pixel is decompressed."""
    if not data:
        raise EmptyFileError("the uploaded file is empty")
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        decoded = _decode_dicom(data, max_pixels)
    else:
        try:
            decoded = _decode_pillow(data, max_pixels)
        except UnsupportedImageError:
            # DICOM without the 128-byte preamble ("DICM"): only tried when the name says so.
            if filename and filename.lower().endswith((".dcm", ".dicom")):
                decoded = _decode_dicom(data, max_pixels, force=True)
            else:
                raise
    _check_finite(decoded.pixels, decoded.format)
    return decoded


def _decode_pillow(data: bytes, max_pixels: int) -> DecodedImage:
    # Pillow's own bomb check warns above MAX_IMAGE_PIXELS and raises above twice that; we apply our own
    # limit from the header below, so only make sure Pillow's is not the stricter one (it is global).
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    magic = sniff_format(data)
    if magic == "PNG":
        _check_png_header(data, max_pixels)
    try:
        # Lazy: reads the header only. Formats are allow-listed (no EPS/Ghostscript, no exotic parsers).
        img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image over the limit of {max_pixels:,} pixels (SPINE_MAX_IMAGE_PIXELS): {exc}") from exc
    except UnidentifiedImageError as exc:
        if magic is not None:  # e.g. a PNG cut inside its header chunks
            raise CorruptImageError(
                f"the file starts like a {magic} image but its header cannot be read (truncated or corrupt)"
            ) from exc
        raise UnsupportedImageError(f"the file is not an image this service reads; send {SUPPORTED}") from exc
    except Exception as exc:  # header present but broken
        raise CorruptImageError(f"the image header cannot be read: {exc}") from exc
    with img:
        fmt = img.format or "unknown"
        width, height = img.size
        _check_pixels(width, height, 1, max_pixels)
        try:
            img.seek(0)  # multi-page TIFF/GIF: the first page
            img.load()
            mode = img.mode
            pixels = _to_array(img)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"image over the limit of {max_pixels:,} pixels (SPINE_MAX_IMAGE_PIXELS): {exc}") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            # e.g. "image file is truncated", broken zlib stream, bad TIFF tags
            raise CorruptImageError(f"the {fmt} image cannot be decoded (truncated or corrupt): {exc}") from exc
    return DecodedImage(pixels=pixels, format=fmt, mode=mode)


def _to_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> gray (native bit depth kept) or 8-bit RGB."""
    mode = img.mode
    if mode in ("L", "F") or mode.startswith("I"):
        arr = np.asarray(img)
        if arr.dtype.byteorder == ">":  # I;16B
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode == "LA":
        return np.asarray(img.getchannel("L"))
    if mode in ("P", "PA"):
        # Palette images may be gray or colour; RGB keeps both right, transparency is dropped.
        return np.asarray(img.convert("RGB"))
    return np.asarray(img.convert("RGB"))  # RGB, RGBA (alpha dropped), CMYK, YCbCr, LAB, HSV


def _decode_dicom(data: bytes, max_pixels: int, force: bool = False) -> DecodedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except InvalidDicomError as exc:
        raise UnsupportedImageError(f"the file is not a DICOM file this service reads: {exc}") from exc
    except Exception as exc:
        raise CorruptImageError(f"the DICOM file cannot be parsed: {exc}") from exc
    if "PixelData" not in ds:
        raise NoPixelDataError("the DICOM file has no pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:
        raise CorruptImageError(f"the DICOM header lacks Rows/Columns: {exc}") from exc
    _check_pixels(cols, rows, frames, max_pixels)

    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        tsyntax = pydicom.uid.ImplicitVRLittleEndian
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise UnsupportedImageError(f"DICOM transfer syntax {tsyntax.name} ({tsyntax}) is not supported") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no decoder plugin"
        raise UnsupportedImageError(
            f"DICOM transfer syntax {tsyntax.name} ({tsyntax}) is compressed and no installed decoder reads it "
            f"({missing}); send it uncompressed (Explicit VR Little Endian) or as PNG"
        )
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise CorruptImageError(f"the DICOM pixel data cannot be decoded: {exc}") from exc

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if frames > 1 and arr.ndim >= 3 and arr.shape[0] == frames:
        arr = arr[0]  # multi-frame: the first frame
    if photometric.startswith("MONOCHROME"):
        # Modality LUT (rescale slope/intercept) first, then the VOI LUT or window the file asks for.
        out = apply_modality_lut(arr, ds)
        out = apply_voi_lut(out, ds)
        out = np.asarray(out, dtype=np.float32)
        if photometric == "MONOCHROME1":  # bright = low values: invert so bone is bright as in MONOCHROME2
            out = out.max() + out.min() - out
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        out = arr[..., :3]  # pydicom returns RGB for YBR and RGB files
    else:
        raise UnsupportedImageError(f"DICOM photometric interpretation {photometric} is not supported")

    view = VIEW_NAMES.get(str(ds.get("ViewPosition", "")).strip().upper())
    modality = str(ds.get("Modality", "")).strip().upper() or None
    sop_class = str(ds.get("SOPClassUID", "") or "").strip() or None
    return DecodedImage(
        pixels=np.ascontiguousarray(out), format="DICOM", mode=photometric, view=view, modality=modality, sop_class_uid=sop_class
    )


def sop_class_name(sop_class_uid: str | None) -> str:
    """'1.2.840.10008.5.1.4.1.1.88.33' -> 'Comprehensive SR Storage' (the UID itself when pydicom does not know it)."""
    if not sop_class_uid:
        return "an object without SOP Class UID"
    from pydicom.uid import UID

    uid = UID(str(sop_class_uid))
    return uid.name if uid.name != str(uid) else str(uid)


def radiograph_problem(modality: str | None, sop_class_uid: str | None, has_pixels: bool = True) -> str | None:
    """Why an object is not a radiograph this service analyses (None when it is one)."""
    modality = (modality or "").strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        what = sop_class_name(sop_class_uid)
        return (
            f"{what} (modality {modality or 'absent'}) is not a projection radiograph; "
            f"only {', '.join(sorted(RADIOGRAPH_MODALITIES))} images are analysed"
        )
    if not has_pixels:
        return f"{sop_class_name(sop_class_uid)} has no pixel data"
    return None
