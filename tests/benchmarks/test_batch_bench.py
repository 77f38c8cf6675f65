"""benchmarks/batch_bench.py end to end on generated films and the service tests' tiny models (local engine
only: Ray's start-up is tested in tests/spine_batch). No speed is asserted: the structure and agreement are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"
if str(SERVICE_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVICE_TESTS))

from spine_service_testlib import write_models_dir  # noqa: E402

from benchmarks.batch_bench import main  # noqa: E402


def test_batch_bench_runs_and_its_configurations_agree(tmp_path: Path, capsys) -> None:
    models = write_models_dir(tmp_path / "models")
    out = tmp_path / "bench.json"
    assert main(["--films", "3", "--models-dir", str(models), "--workers", "1,2", "--actors", "", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["engine"], r["parallelism"]) for r in report["runs"]] == [("local", 1), ("local", 2)]
    for run in report["runs"]:
        assert run["images"] == 3 and run["errors"] == 0 and run["same_rows"] is True
        assert run["seconds"] > 0 and run["images_per_s"] > 0 and run["peak_rss_mib"] > 0 and run["cpu_s"] > 0
    assert "| local | 2 | 3 | 0 |" in capsys.readouterr().out
