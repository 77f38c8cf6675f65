"""`python -m service.healthcheck` (the Docker and compose HEALTHCHECK): ready, keyed, not ready, not listening."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from spine_service_testlib import copy_models_dir, free_port, make_settings, serve_live

from service.healthcheck import check

KEY = "k-" + "7" * 30


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_ready_server(models_dir: Path) -> None:
    with serve_live(make_settings(models_dir)) as address:
        assert check(make_settings(models_dir, port=_port(address))) == (True, "HTTP 200")


def test_keyed_server_needs_the_containers_key(models_dir: Path) -> None:
    with serve_live(make_settings(models_dir, api_keys=KEY)) as address:
        port = _port(address)
        assert check(make_settings(models_dir, port=port, api_keys=KEY)) == (True, "HTTP 200")
        assert check(make_settings(models_dir, port=port)) == (False, "HTTP 401")
        assert check(make_settings(models_dir, port=port, api_keys="wrong-key-0123456789"))[0] is False


def test_not_ready_server(models_dir: Path, tmp_path: Path) -> None:
    broken = copy_models_dir(models_dir, tmp_path / "m")
    (broken / "Ap_Vertebra/1/model.onnx").unlink()
    with serve_live(make_settings(broken)) as address:
        assert check(make_settings(broken, port=_port(address))) == (False, "HTTP 503")


def test_nothing_listening(models_dir: Path) -> None:
    ready, seen = check(make_settings(models_dir, port=free_port()), timeout_s=2)
    assert not ready and seen.startswith("unreachable")


@pytest.mark.parametrize(("keyed", "exit_code"), [(True, 0), (False, 1)])
def test_module_exit_code_from_the_environment(models_dir: Path, tmp_path: Path, keyed: bool, exit_code: int) -> None:
    # As the HEALTHCHECK runs it: a fresh process reading SPINE_* from its environment.
    with serve_live(make_settings(models_dir, api_keys=KEY)) as address:
        env = {"SPINE_PORT": str(_port(address)), "PATH": "/usr/bin:/bin"}
        if keyed:
            env["SPINE_API_KEYS"] = KEY
        proc = subprocess.run(
            [sys.executable, "-m", "service.healthcheck"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    assert proc.stdout.startswith("/health/ready: HTTP " + ("200" if keyed else "401"))
