"""Fixtures shared by the service tests; the helpers live in spine_service_testlib."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from spine_service_testlib import CPU, make_settings, serve_live, start_client, write_models_dir

from service.core.config import DEFAULT_MODELS_DIR
from spine_engine import ModelRegistry


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only for tests: copy it (copy_models_dir) before breaking anything."""
    return write_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def registry(models_dir: Path) -> ModelRegistry:
    return ModelRegistry.load(models_dir, providers=CPU, intra_op_threads=1)


@pytest.fixture(scope="session")
def client(models_dir: Path) -> Iterator[TestClient]:
    c = start_client(make_settings(models_dir))
    try:
        yield c
    finally:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_server(models_dir: Path) -> Iterator[str]:
    with serve_live(make_settings(models_dir)) as address:
        yield address


@pytest.fixture(scope="session")
def committed_registry() -> ModelRegistry:
    """The committed exported_models/ on the CPU, loaded once for every test that serves them (about 1 GB of
    sessions: one copy, not one per module). Skips where the models are not committed."""
    if not (DEFAULT_MODELS_DIR / "manifest.json").is_file():
        pytest.skip(f"{DEFAULT_MODELS_DIR}/manifest.json is absent: the trained models are not committed")
    return ModelRegistry.load(DEFAULT_MODELS_DIR, providers=CPU, intra_op_threads=2, warmup=False)
