"""A real PACS for these tests: Orthanc (Debian `orthanc` + `orthanc-dicomweb`) on a free loopback port, with a
temporary storage folder, the DICOMweb plugin and HTTP basic authentication; skipped where it is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from spine_pacs_testlib import PASSWORD, USER, Orthanc, free_port, orthanc_plugin, write_models_dir


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    binary, plugin = shutil.which("Orthanc"), orthanc_plugin()
    if binary is None or plugin is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (Debian: orthanc orthanc-dicomweb; .ci/run installs them)")
    root = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "spine-xray-tests",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,  # DICOMweb only: no DIMSE port to collide with
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = root / "orthanc.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"Orthanc exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/system", auth=(USER, PASSWORD), timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not answer within 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Orthanc(url=url, dicomweb=f"{url}/dicom-web", auth=(USER, PASSWORD), log=log)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models_dir(tmp_path_factory.mktemp("models"))
