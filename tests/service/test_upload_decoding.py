"""Image decoding: formats, bit depths, colour modes, DICOM pixel pipeline, limits checked from the header."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydicom.uid import HTJ2KLossless, RLELossless
from spine_service_testlib import encode, make_dicom, png_declaring, spine_image, tall_film, truncated_jpeg

from service.core.config import Settings
from spine_engine.decoding import (
    CorruptImageError,
    EmptyFileError,
    ImageTooLargeError,
    UnsupportedImageError,
    decode_image,
)

LIMIT = 100_000_000


def test_png_8_and_16_bit_keep_their_values() -> None:
    img = spine_image()
    out = decode_image(encode(img), LIMIT)
    assert out.format == "PNG" and out.pixels.dtype == np.uint8
    np.testing.assert_array_equal(out.pixels, img)
    wide = (img.astype(np.uint16) * 257 + 3).astype(np.uint16)
    out16 = decode_image(encode(wide), LIMIT)
    assert out16.pixels.dtype in (np.uint16, np.int32) and out16.pixels.max() > 255
    np.testing.assert_array_equal(out16.pixels.astype(np.int64), wide.astype(np.int64))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("I;16", "PNG"),
        ("CMYK", "TIFF"),
        ("RGB", "BMP"),
    ],
)
def test_colour_modes_are_accepted_and_converted(mode: str, fmt: str) -> None:
    img = spine_image()
    out = decode_image(encode(img, fmt, mode=mode), LIMIT)
    assert out.pixels.shape[:2] == img.shape
    assert out.pixels.ndim == 2 or out.pixels.shape[2] == 3


def test_jpeg_and_tiff() -> None:
    img = spine_image()
    jpeg = decode_image(encode(img, "JPEG", quality=95), LIMIT)
    assert jpeg.format == "JPEG" and jpeg.pixels.shape == img.shape
    assert np.abs(jpeg.pixels.astype(int) - img).mean() < 5
    tiff16 = decode_image(encode(img.astype(np.uint16) * 200, "TIFF"), LIMIT)
    assert tiff16.format == "TIFF" and tiff16.pixels.max() == int(img.max()) * 200


def test_bad_bytes() -> None:
    with pytest.raises(EmptyFileError):
        decode_image(b"", LIMIT)
    with pytest.raises(UnsupportedImageError, match="not an image"):
        decode_image(b"hello, this is a text file\n" * 10, LIMIT)
    with pytest.raises(CorruptImageError, match="truncated or corrupt"):
        decode_image(truncated_jpeg(), LIMIT)
    with pytest.raises(UnsupportedImageError):  # a format we do not allow, even though Pillow reads it
        decode_image(encode(spine_image(), "GIF"), LIMIT)


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    bomb = png_declaring(60000, 60000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        decode_image(bomb, LIMIT)
    assert time.perf_counter() - started < 0.5  # nothing was decompressed
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        decode_image(encode(spine_image(300, 120)), 300 * 120 - 1)


def test_defaults_accept_real_films() -> None:
    settings = Settings(_env_file=None)
    assert settings.max_image_pixels >= 50_000_000 and settings.max_upload_bytes >= 100 * 1024 * 1024
    film = decode_image(encode(tall_film(), "JPEG", quality=80), settings.max_image_pixels)
    assert (film.height, film.width) == (6500, 2500)
    with pytest.raises(CorruptImageError):  # 50 MP declared passes the limit; the fake data then fails to decode
        decode_image(png_declaring(7071, 7071), settings.max_image_pixels)


# --------------------------------------------------------------------------- DICOM


def test_dicom_16bit_with_rescale() -> None:
    raw = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50).astype(np.uint16)
    out = decode_image(make_dicom(raw, slope=2.0, intercept=-1024.0), LIMIT)
    assert out.format == "DICOM" and out.pixels.shape == (40, 30)
    np.testing.assert_allclose(out.pixels, raw.astype(np.float64) * 2.0 - 1024.0)


def test_dicom_monochrome1_is_inverted() -> None:
    raw = np.tile(np.arange(30, dtype=np.uint16) * 100, (40, 1))
    mono2 = decode_image(make_dicom(raw, photometric="MONOCHROME2"), LIMIT).pixels
    mono1 = decode_image(make_dicom(raw, photometric="MONOCHROME1"), LIMIT).pixels
    assert mono2[0, -1] > mono2[0, 0]  # bright where the values are high
    assert mono1[0, -1] < mono1[0, 0]  # MONOCHROME1: high values are dark, so inverted
    np.testing.assert_allclose(mono1 + mono2, mono2.max() + mono2.min())


def test_dicom_window_is_applied() -> None:
    raw = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (10, 1))
    out = decode_image(make_dicom(raw, window=(1000.0, 400.0)), LIMIT).pixels
    # Outside the window everything saturates: 0..800 all map to the bottom, 1200.. to the top.
    assert len(np.unique(out[0, raw[0] <= 800])) == 1 and len(np.unique(out[0, raw[0] >= 1200])) == 1
    assert out[0, raw[0] == 1000][0] > out[0, 0]


def test_dicom_view_position_and_8bit() -> None:
    img = spine_image(60, 40)
    out = decode_image(make_dicom(img, view="LL"), LIMIT)
    assert out.view == "LAT" and out.pixels.shape == img.shape
    assert decode_image(make_dicom(img, view="AP"), LIMIT).view == "AP"
    assert decode_image(make_dicom(img), LIMIT).view is None


def test_dicom_rle_is_decoded_and_htj2k_refused_with_415() -> None:
    raw = (spine_image(50, 40).astype(np.uint16) * 16).astype(np.uint16)
    out = decode_image(make_dicom(raw, transfer_syntax=RLELossless), LIMIT)
    np.testing.assert_array_equal(out.pixels, raw.astype(np.float32))
    # HTJ2K: no decoder without pylibjpeg-openjpeg (JPEG-LS has one since highdicom brings pyjpegls)
    with pytest.raises(UnsupportedImageError, match="JPEG 2000") as err:
        decode_image(make_dicom(raw, transfer_syntax=HTJ2KLossless), LIMIT)
    assert err.value.status_code == 415 and "uncompressed" in err.value.message


def test_dicom_pixel_limit_from_header_and_no_preamble() -> None:
    with pytest.raises(ImageTooLargeError):
        decode_image(make_dicom(np.zeros((4, 4), np.uint16), rows_cols=(60000, 60000)), LIMIT)
    img = spine_image(30, 20)
    bare = make_dicom(img, preamble=False)
    out = decode_image(bare, LIMIT, filename="scan.DCM")
    np.testing.assert_array_equal(out.pixels, img.astype(np.float32))
    with pytest.raises(UnsupportedImageError):
        decode_image(bare, LIMIT, filename="scan.bin")
