"""Helpers of the spine-batch tests (a uniquely named module, not `conftest`, so tests import it unambiguously).

The tiny models and images come from tests/service/spine_service_testlib.py, put on sys.path here.
"""

from __future__ import annotations

import sys
from pathlib import Path

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"
if str(SERVICE_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVICE_TESTS))

from spine_service_testlib import encode, make_dicom, spine_image, truncated_jpeg  # noqa: E402

# What the films folder holds, by relative path: each a decodable film but `broken/cut.jpg`.
GOOD_FILMS = ["a.png", "b.jpg", "c.tif", "series/d.png", "series/lat.dcm", "series/noext"]
CORRUPT_FILM = "broken/cut.jpg"


def write_films(folder: Path) -> Path:
    """PNG, JPEG, TIFF, a DICOM saying LL (lateral), an extension-less DICOM without a view, a corrupt JPEG,
    and files that are not films (a note, a hidden folder)."""
    (folder / "series").mkdir(parents=True)
    (folder / "broken").mkdir()
    (folder / ".hidden").mkdir()
    (folder / "a.png").write_bytes(encode(spine_image(seed=1)))
    (folder / "b.jpg").write_bytes(encode(spine_image(seed=2), "JPEG", quality=92))
    (folder / "c.tif").write_bytes(encode(spine_image(seed=3), "TIFF"))
    (folder / "series/d.png").write_bytes(encode(spine_image(height=360, width=140, seed=4)))
    (folder / "series/lat.dcm").write_bytes(make_dicom(spine_image(seed=5), view="LL"))
    (folder / "series/noext").write_bytes(make_dicom(spine_image(seed=6)))
    (folder / CORRUPT_FILM).write_bytes(truncated_jpeg())
    (folder / "notes.txt").write_text("not a film")
    (folder / ".hidden/e.png").write_bytes(encode(spine_image(seed=7)))
    return folder
