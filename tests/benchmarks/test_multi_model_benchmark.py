"""The multi-model benchmark (benchmarks/multi_model.py) still runs against the code it measures:
a dozen small images, two models, captions provided, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_multi_model_benchmark_runs_end_to_end_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "multi_model.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURON_ATLAS_OFFLINE": "1"}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "multi_model.py"),
        *("--images", "12", "--device", "cpu", "--captions", "provided", "--uncertainty", "statistics"),
        *("--workers", "1", "--json", str(out)),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"resnet18", "resnet34", "both"}
    both = result["runs"]["both"]["wall_s"]
    # the once-stages ran once in the job of both, the per-model ones and the comparison too
    assert {"caption", "embed_cluster", "labelling", "activation", "uncertainty", "compare"} <= set(both)
    assert "compare" not in result["runs"]["resnet18"]["wall_s"]
    assert result["cpu"]["ratio_to_separate"] > 0
