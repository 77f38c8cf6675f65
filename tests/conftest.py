"""Suite-wide: which tests are end to end (`e2e`), and memory given back after each module.

`make test` runs everything (CI does); `make test-fast` deselects `e2e` and `slow` for the inner loop. A test is
end to end when it needs a browser, a PACS, a live server on the committed models, Ray, or a fuzzing/soak run:
listed here by path rather than marked file by file, so a new test in those folders is classed with them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

# Paths relative to tests/: a folder (ends with /) or a module.
E2E_PATHS = (
    "browser/",
    "pacs/",
    "reliability/test_soak_short.py",
    "reliability/test_openapi_fuzz.py",
    "service/test_serve_committed_models.py",
    "service/test_not_a_spine_corpus.py",
    "service/test_readme_quick_start.py",
    "spine_batch/test_engines.py",
    "benchmarks/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath / "tests"
    for item in items:
        try:
            relative = item.path.relative_to(root).as_posix()
        except ValueError:
            continue
        if any(relative.startswith(p) if p.endswith("/") else relative == p for p in E2E_PATHS):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module", autouse=True)
def _free_what_the_module_built() -> Iterator[None]:
    """Set up first, so torn down last: after the module's own fixtures (model registries, clients, live servers)
    are finalised. Collecting then gives their onnxruntime sessions and arrays back at once, not whenever the
    cyclic collector next runs, so two modules' models are not held together."""
    yield
    gc.collect()
