"""The orchestration benchmark (suite against embedded) still runs against the code it measures.

It starts its own Redis, SeaweedFS, workers and gateway, as a deployment on one machine; a dozen
small images, two alternated repeats and a few pollers keep it working in CI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_orchestration_benchmark_compares_warm_suite_jobs_with_embedded_runs(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURON_ATLAS_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "orchestration.py"),
        *("--images", "12", "--shard-size", "6", "--passes", "off", "--repeats", "2"),
        *("--pollers", "4", "--requests-each", "3", "--poll-interval", "0.2"),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    # each side's wall and CPU seconds (the suite's: all its processes together)
    for repeat in (1, 2):
        pattern = rf"repeat {repeat}: embedded [\d.]+ s \(([\d.]+) CPU s\), suite [\d.]+ s \(([\d.]+) CPU s"
        found = re.search(pattern, output)
        assert found and float(found.group(1)) > 0 and float(found.group(2)) > 0, output[-3000:]
    ratio = re.search(r"median\) +[\d.]+ s +ratio +([\d.]+)x", output)
    assert ratio and float(ratio.group(1)) > 0, output[-3000:]
    # every process of the suite is accounted for in CPU seconds
    cpu = output.split("CPU seconds each process used during it:")[1].splitlines()[0]
    assert "seaweedfs" in cpu and "redis" in cpu and "gateway" in cpu
    assert "GET /v1/jobs/{id}" in output
