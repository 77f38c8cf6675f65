"""CI's short mode of scripts/soak.py: a live spine-serve on tiny models, a few hundred mixed requests at
concurrency 16, no request lost or failed, the server's own count agrees. (The full run, 10,000 requests with
the RSS verdict, is in docs/reliability.md.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_soak_short_mode(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    cmd = [sys.executable, str(REPO / "scripts" / "soak.py"), "--tiny", "--requests", "300", "--concurrency", "16"]
    cmd += ["--short", "--window", "100", "--rss-baseline", "100", "--report", str(report)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert (rep["answered"], rep["lost"], rep["failed"]) == (300, 0, 0)
    assert rep["server_counted_requests"] == 300 and rep["server_error_log_lines"] == 0
    assert {"200", "422"} == set(rep["statuses"])
    assert len(rep["windows"]) == 3 and rep["rss"]["end_mib"] > 0
    assert set(rep["latency_by_kind"]) >= {"segment_png_ap", "classify_ap_lat", "v2_infer", "bad_corrupt_png"}
