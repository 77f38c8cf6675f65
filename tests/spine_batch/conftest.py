"""Fixtures of the spine-batch tests: the service tests' tiny models and a folder of generated films."""

from __future__ import annotations

from pathlib import Path

import pytest
from spine_batch_testlib import write_films
from spine_service_testlib import CPU, write_models_dir

from spine_engine import ModelRegistry
from spine_engine.engine import Engine


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def registry(models_dir: Path) -> ModelRegistry:
    return ModelRegistry.load(models_dir, providers=CPU, intra_op_threads=1)


@pytest.fixture(scope="session")
def loaded_engine(registry: ModelRegistry) -> Engine:
    """The analysis engine over the tiny models, with the default policy (what spine-batch builds from its settings)."""
    return Engine(registry)


@pytest.fixture(scope="session")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_films(tmp_path_factory.mktemp("films"))
