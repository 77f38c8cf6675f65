"""A DICOMweb server as the source: a real Orthanc (Debian `orthanc` + `orthanc-dicomweb`) on a free loopback
port; skipped with the reason when it is not installed. Rows equal the same films read from files."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from spine_service_testlib import make_dicom, spine_image

from spine_batch.cli import main
from spine_batch.results import read_results
from spine_batch.rows import RowOptions, classify_item
from spine_batch.sources import Item
from spine_engine.engine import Engine

AUTH = ("batch", "batch-secret")
PLUGIN_DIRS = [Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("Orthanc")
    plugin = next((d / "libOrthancDicomWeb.so" for d in PLUGIN_DIRS if (d / "libOrthancDicomWeb.so").exists()), None)
    if binary is None or plugin is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (Debian: orthanc orthanc-dicomweb)")
    root, port = tmp_path_factory.mktemp("orthanc"), _free_port()
    config = {
        "StorageDirectory": str(root),
        "IndexDirectory": str(root),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {AUTH[0]: AUTH[1]},
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/system", auth=AUTH, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "Orthanc did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def _study_dicom(study: str, view: str | None, seed: int) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(spine_image(seed=seed), view=view)))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, generate_uid(), "batch-test"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_studies_from_dicomweb_are_rows_like_files(
    orthanc: str, models_dir: Path, loaded_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = [generate_uid(), generate_uid()]
    films = {(studies[0], "AP", 1), (studies[0], "LL", 2), (studies[1], None, 3)}  # the last: --view decides
    expected = []
    for study, view, seed in films:
        data = _study_dicom(study, view, seed)
        assert requests.post(f"{orthanc}/instances", data=data, auth=AUTH, timeout=30).ok
        (tmp_path / f"{seed}.dcm").write_bytes(data)
        expected.append(
            classify_item(loaded_engine, Item(key=str(seed), path=str(tmp_path / f"{seed}.dcm")), RowOptions(default_view="AP"))
        )
    missing = generate_uid()
    monkeypatch.setenv("SPINE_DICOMWEB_USERNAME", AUTH[0])
    monkeypatch.setenv("SPINE_DICOMWEB_PASSWORD", AUTH[1])
    out = tmp_path / "results.parquet"
    args = [f"{orthanc}/dicom-web", "--studies", ",".join([*studies, missing]), "--out", str(out), "--view", "AP"]
    args += ["--models-dir", str(models_dir), "--providers", "CPUExecutionProvider"]
    assert main(args) == 0

    rows = {row["path"]: row for row in read_results(out).to_pylist()}
    assert len(rows) == 4 and rows[missing]["error_code"] == "study_not_found" and rows[missing]["study"] == missing
    fetched = [row for key, row in rows.items() if key != missing]
    assert all(row["path"].startswith(row["study"] + "/") for row in fetched)
    assert sorted(row["view"] for row in fetched) == ["AP", "AP", "LAT"]

    def outcome(row: dict) -> tuple:
        return tuple(sorted((k, v) for k, v in row.items() if k not in ("path", "study", "host") and v is not None))

    assert sorted(map(outcome, fetched)) == sorted(map(outcome, expected))

    assert main(args) == 0  # resumes: every instance and the missing study are already rows
    assert read_results(out).num_rows == 4

    monkeypatch.setenv("SPINE_DICOMWEB_PASSWORD", "wrong")
    denied = tmp_path / "denied.parquet"
    assert main([*args[:4], str(denied), *args[5:]]) == 0
    codes = {row["error_code"] for row in read_results(denied).to_pylist()}
    assert codes == {"pacs_error"}  # 401 from the server: each study one error row, never a crash
