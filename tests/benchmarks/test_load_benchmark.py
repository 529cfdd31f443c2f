"""The load benchmark still runs against the suite it measures: a few seconds of the same run
(its own servers, pollers and submitters), so the script cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_load_benchmark_runs_briefly_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURON_ATLAS_OFFLINE": "1"}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "load.py"),
        *("--seconds", "5", "--pollers", "10", "--submitters", "2", "--json", str(out)),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["error_count"] == 0, result["errors"]
    assert {"GET /v1/jobs/{id}", "POST /v1/jobs", "POST /v1/jobs/{id}:cancel"} <= set(result["routes"])
    assert all(
        route["requests"] > 0 and route["p99_ms"] >= route["p50_ms"] for route in result["routes"].values()
    )
