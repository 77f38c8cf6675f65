"""deploy/ray/cluster.yaml, the `ray up` recipe for a cluster of on-premises machines, checked without machines:
Ray's own config preparation and schema (what `ray up` runs before it reaches a node), plus what the recipe
relies on: the token on every node, the shared paths mounted on every node, the head without CPUs, and the
spine-batch command of its header accepted by spine-batch's own parser."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra)")
pytest.importorskip("jsonschema", reason="jsonschema (dev extra): Ray validates cluster configs with it")
pytest.importorskip("ray.autoscaler", reason="Ray (batch extra)")

from ray.autoscaler._private.providers import _get_node_provider_cls  # noqa: E402
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

from spine_batch.cli import _parser  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "deploy" / "ray" / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def _prepared(config: dict) -> dict:
    """What `ray up` does with the file before it connects anywhere: defaults merged, schema, provider bootstrap."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return _get_node_provider_cls(prepared["provider"]).bootstrap_config(prepared)


def test_ray_up_accepts_it_and_would_refuse_a_misspelt_key(config: dict) -> None:
    prepared = _prepared(config)
    assert prepared["provider"]["worker_ips"] and prepared["provider"]["head_ip"] not in prepared["provider"]["worker_ips"]
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        _prepared({**config, "setup_comands": config["setup_commands"]})


def _start_commands(config: dict) -> tuple[str, str]:
    head, worker = (" ".join(config[key]) for key in ("head_start_ray_commands", "worker_start_ray_commands"))
    return head, worker


def test_every_node_joins_with_the_shared_token_and_the_head_only_drives(config: dict) -> None:
    head, worker = _start_commands(config)
    (token_path,) = [path for path in config["file_mounts"] if "token" in path]  # synced to every node
    for command in (head, worker):
        assert "RAY_AUTH_MODE=token" in command and f"RAY_AUTH_TOKEN_PATH={token_path}" in command
    assert "--head" in head and "--num-cpus=0" in head  # actors go to the workers; the head writes the results
    port = re.search(r"--port=(\d+)", head)
    assert port and f"--address=$RAY_HEAD_IP:{port.group(1)}" in worker


def _exec_command(text: str) -> list[str]:
    """The spine-batch command of the header comment (`ray exec … '…'`), as argv."""
    comment = " ".join(line.lstrip("# ").rstrip("\\").strip() for line in text.splitlines() if line.startswith("#"))
    quoted = re.search(r"ray exec \S+ '([^']+)'", comment)
    assert quoted, "the header shows no `ray exec … 'spine-batch …'`"
    argv = shlex.split(quoted.group(1))
    return argv[next(i for i, word in enumerate(argv) if word.endswith("/spine-batch")) :]


def test_the_documented_run_uses_paths_every_node_mounts_and_the_installed_models(config: dict) -> None:
    argv = _exec_command(RECIPE.read_text())
    args = _parser().parse_args(argv[1:])  # spine-batch's own parser: every option exists
    assert args.engine == "ray" and args.ray_address == "auto"
    mounts = " ".join(config["initialization_commands"])  # run on every node, head and workers
    for path in (args.source, str(args.out.parent)):
        assert re.search(rf"mount\b.* {re.escape(path)}\b", mounts), f"{path} is not mounted on every node"
    assert "mount -t nfs4 -o ro" in mounts  # the archive is read-only to the cluster
    checkout = Path(argv[0]).parents[2]  # …/.venv/bin/spine-batch -> the checkout, with exported_models/
    setup = " ".join(config["setup_commands"])
    assert f"cd {checkout} && " in setup and "pip install -q -e '.[batch]'" in setup
    assert args.models_dir is None  # the default, <checkout>/exported_models: the same path on every node
    head, worker = _start_commands(config)
    assert f"{checkout}/.venv/bin/ray start" in head and f"{checkout}/.venv/bin/ray start" in worker
