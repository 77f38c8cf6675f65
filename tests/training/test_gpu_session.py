"""The GPU session script passes each stage's options on to `spine-train` (its training itself is not run here)."""

from __future__ import annotations

import pytest

import training.gpu_session as gpu_session


@pytest.fixture
def calls(monkeypatch) -> list[list[str]]:
    seen: list[list[str]] = []
    monkeypatch.setattr(gpu_session, "train_main", lambda argv: seen.append(list(argv)))
    return seen


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_first_stage_width_reaches_spine_train(calls) -> None:
    gpu_session.main(["--stages", "vertebra", "--vertebra-filters", "32", "--vertebra-budget", "500"])
    (argv,) = calls
    assert _option(argv, "--structure") == "Ap_Vertebra" and _option(argv, "--run-dir") == "runs/Ap_Vertebra"
    assert _option(argv, "--filters") == "32" and _option(argv, "--time-budget") == "500.0"
    assert (_option(argv, "--epochs"), _option(argv, "--patience")) == ("400", "40") and "--batch-size" not in argv


def test_refine_stage_trains_on_the_refine_cache(calls) -> None:
    gpu_session.main(["--stages", "refine", "--refine-cache", "w.npz", "--refine-filters", "24"])
    (argv,) = calls
    assert _option(argv, "--cache") == "w.npz" and _option(argv, "--filters") == "24"
    assert _option(argv, "--run-dir") == "runs/Ap_Vertebra_refine"
    assert (_option(argv, "--epochs"), _option(argv, "--patience"), _option(argv, "--batch-size")) == ("400", "40", "8")


def test_default_stages_train_the_first_stage_and_both_runs_of_each_demo(calls) -> None:
    gpu_session.main([])
    structures = [_option(argv, "--structure") for argv in calls]
    assert structures[0] == "Ap_Vertebra" and _option(calls[0], "--filters") == "16"
    assert len(calls) == 1 + 2 * 7 and "Ap_Vertebra" not in structures[1:]
