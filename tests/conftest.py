"""Suite-wide: which set each test is in, modules a run leaves out never imported, and memory given back after each module.

Three sets, one per Makefile target: `make test-fast` (the inner loop) runs what is neither `e2e` nor `heavy`;
`make test` (what a laptop runs) everything but `heavy`; `make test-all` (CI) everything. A test is end to end
(`e2e`) when it needs a browser, a PACS, a live server on the committed models, Ray, a fuzzing/soak run, or
other processes (the service or its health check started as one, the DICOM validator over every kind of film); it is
`heavy` when it is too long or too large for `make test`: TensorFlow (`slow`), the multi-host Ray cluster
(`cluster`), PyPI (`network`), and spine-batch on Ray (HEAVY_TESTS). Listed here by path rather than
marked file by file, so a new test in those folders is classed with them, and so that a module the `-m`
expression leaves out entirely is not even imported (TensorFlow alone is about 10 s and 0.6 GB to import).
"""

from __future__ import annotations

import gc
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# Paths relative to tests/ (a folder ends with /) -> the markers every test there carries.
PATH_MARKERS: dict[str, tuple[str, ...]] = {
    "browser/": ("e2e",),
    "pacs/": ("e2e",),
    "benchmarks/": ("e2e",),
    "reliability/test_soak_short.py": ("e2e",),
    "reliability/test_openapi_fuzz.py": ("e2e",),
    "reliability/test_v2_codec_fuzz.py": ("e2e",),
    "reliability/test_failure_modes.py": ("e2e",),  # spine-serve started as a process: SIGTERM, broken models, no CUDA
    "service/test_container_healthcheck.py": ("e2e",),  # `python -m service.healthcheck` as a process, live servers
    "service/inference/test_import_boundaries.py": ("e2e",),  # lint-imports and a fresh interpreter, as processes
    "service/dicom/test_radiograph_kinds.py": ("e2e",),  # 32 kinds of film through /dicom/seg and /dicom/sr, dciodvfy on each
    "service/test_serve_committed_models.py": ("e2e",),
    "service/test_level_sheets.py": ("e2e",),  # the committed landmark model on an example film
    "service/test_landmark_first_pass.py": ("e2e",),  # the committed models, with and without the overlap
    "service/test_fullbody_windows.py": ("e2e",),  # the committed landmark model on a marked full-body film
    "service/test_not_a_spine_corpus.py": ("e2e",),
    "service/test_readme_quick_start.py": ("e2e",),
    "spine_batch/test_engines.py": ("e2e",),
    "spine_batch/test_dicomweb_source.py": ("e2e",),  # a real Orthanc
    "spine_batch/test_cluster.py": ("e2e", "cluster"),
    "benchmarks/test_benchmarks_quick.py": ("slow",),  # exports (tiny) Keras models with tf2onnx
    "training/test_annotated_training.py": ("slow",),
    "training/test_landmarks_training.py": ("slow",),
    "training/test_ends_training.py": ("slow",),
    "training/test_tilt_training.py": ("slow",),
    "training/test_training_pipeline.py": ("slow",),
    "training/test_unet_finetune.py": ("slow",),
    "training/test_widen.py": ("slow",),  # builds Keras models: the only TensorFlow test of the unit set before
}
# Markers given by path only (PATH_MARKERS): a module's own mark would not be seen when deciding what to import.
PATH_ONLY_MARKERS = ("e2e",)
# A test with any of these markers is heavy.
HEAVY_MARKERS = ("slow", "cluster", "network")
# End-to-end tests (node ids relative to tests/, parameters included) too long or too large for `make test`; CI runs
# them (`make test-all`).
HEAVY_TESTS = (
    # Ray on this machine: 22 s when idle, 2 min under load, and its driver stays in the pytest process (+0.7 GB)
    # with a raylet, a GCS and workers beside it
    "spine_batch/test_engines.py::test_rows_equal_the_service_s_and_a_rerun_resumes[ray]",
)


def _path_markers(relative: str) -> set[str]:
    found: set[str] = set()
    for path, markers in PATH_MARKERS.items():
        if relative.startswith(path) if path.endswith("/") else relative == path:
            found.update(markers)
    if found & set(HEAVY_MARKERS):
        found.add("heavy")
    return found


def _relative(config: pytest.Config, path: Path) -> str | None:
    try:
        return path.relative_to(config.rootpath / "tests").as_posix()
    except ValueError:
        return None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """True for a module (or folder) whose path markers already make the `-m` expression false for every test in it,
    whatever markers its tests add (all but PATH_ONLY_MARKERS): it is left out without importing it. None (collect
    as usual) otherwise."""
    markexpr = config.getoption("markexpr", "")
    relative = _relative(config, collection_path)
    if not markexpr or "(" in markexpr or relative is None:  # no -m, or marker arguments: collect everything
        return None
    is_folder = collection_path.is_dir()
    fixed = _path_markers(relative + "/" if is_folder else relative)
    if is_folder and not fixed:  # its modules may have path markers of their own
        return None
    try:
        from _pytest.mark.expression import Expression  # pytest's own parser of -m; private, hence the fallback

        expression = Expression.compile(markexpr)
    except Exception:
        return None
    names = set(re.findall(r"[\w.:+\-\[\]/\\]+", markexpr)) - {"and", "or", "not", "True", "False"}
    names -= fixed | set(PATH_ONLY_MARKERS)  # what the module's tests could add to `fixed`
    for n in range(len(names) + 1):
        for extra in itertools.combinations(sorted(names), n):
            if expression.evaluate(lambda name, /, present=fixed | set(extra), **_: name in present):
                return None
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        relative = _relative(config, item.path)
        if relative is None:
            continue
        markers = _path_markers(relative)
        for name in PATH_ONLY_MARKERS:
            if item.get_closest_marker(name) and name not in markers:
                raise pytest.UsageError(f"{item.nodeid} is marked {name} in its module: list it in PATH_MARKERS ({__file__})")
        if any(item.get_closest_marker(m) for m in HEAVY_MARKERS) or f"{relative}::{item.name}" in HEAVY_TESTS:
            markers.add("heavy")
        for name in sorted(markers):
            item.add_marker(name)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the imports built lives as long as the run: moved out of the collector's sight (gc.freeze), so that the
    collection after each module (below) scans what the tests made, not the ~650,000 objects of the imported
    libraries (0.7 s a module, about a minute over the suite)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="module", autouse=True)
def _free_what_the_module_built() -> Iterator[None]:
    """Set up first, so torn down last: after the module's own fixtures (model registries, clients, live servers)
    are finalised. Collecting then gives their onnxruntime sessions and arrays back at once, not whenever the
    cyclic collector next runs, so two modules' models are not held together."""
    yield
    gc.collect()
