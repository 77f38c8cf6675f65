"""Helpers of the PACS tests: the Orthanc process description, and the test folders of tests/service on sys.path.

A uniquely named module (pytest's prepend import mode needs unique basenames across tests/)."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"
for folder in (SERVICE_TESTS, SERVICE_TESTS / "dicom"):  # spine_service_testlib, spine_dicom_testlib
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from spine_service_testlib import write_models_dir  # noqa: E402

__all__ = ["PASSWORD", "USER", "Orthanc", "free_port", "orthanc_plugin", "write_models_dir"]

# Where Debian's orthanc-dicomweb puts the plugin.
PLUGIN_DIRS = [Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins")]
USER, PASSWORD = "spine", "spine-test-password"


@dataclass(frozen=True)
class Orthanc:
    url: str  # REST root
    dicomweb: str  # DICOMweb root
    auth: tuple[str, str]
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_plugin() -> Path | None:
    return next((d / "libOrthancDicomWeb.so" for d in PLUGIN_DIRS if (d / "libOrthancDicomWeb.so").exists()), None)
