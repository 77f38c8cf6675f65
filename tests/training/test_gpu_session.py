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


def test_the_landmark_gpu_script_starts_three_runs_that_spine_train_accepts(tmp_path, monkeypatch) -> None:
    """training/gpu_landmarks.sh with stand-ins for python3 and nvidia-smi: each training process it starts is a
    `spine-train landmarks` command line that the real parser accepts, on whole frames, from the carried kit."""
    import os
    import subprocess
    from pathlib import Path

    import training.cli as cli

    root = Path(__file__).resolve().parents[2]
    shims, out, calls = tmp_path / "bin", tmp_path / "out", tmp_path / "calls"
    shims.mkdir()
    out.mkdir()
    calls.mkdir()
    # One file per call: the script starts its runs in the background, and appends to one file would interleave.
    record = 'for a in "$@"; do printf "%s\\037" "$a"; done > "$(mktemp "$CALLS/call.XXXXXX")"'
    (shims / "python3").write_text(f"#!/bin/sh\n{record}\n")
    (shims / "nvidia-smi").write_text("#!/bin/sh\necho stand-in\n")
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "OUT": str(out), "CALLS": str(calls), "BUDGET": "99"}
    subprocess.run(["bash", str(root / "training" / "gpu_landmarks.sh")], cwd=tmp_path, env=env, timeout=60, check=False)
    lines = [call.read_text().split("\x1f")[:-1] for call in calls.iterdir()]
    runs = [args[2:] for args in lines if args[:1] == ["-c"] and "train_main" in args[1]]
    assert len(runs) == 3
    parsed = []
    monkeypatch.setattr(cli, "cmd_landmarks", parsed.append)
    for argv in runs:
        cli.train_main(argv)
    assert len({a.run_dir for a in parsed}) == 3 and all(a.run_dir.startswith("runs/gpu/") for a in parsed)
    assert all(a.time_budget == 99 and a.cache == ".devkit/lm/landmarks_q95.npz" for a in parsed)
    assert all(a.init_landmarks == ".devkit/lm/landmarks_served.weights.h5" for a in parsed)
    assert sorted(a.crop_height for a in parsed) == [0, 0, 256]
