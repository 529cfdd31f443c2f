"""The pipeline benchmark still runs against the code it measures.

It imports the stages lazily, inside its run; a rename once left it broken while every test
passed. A dozen small images through the whole run keep it honest in a few seconds of work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path: Path, *flags: str) -> dict:
    """benchmarks/pipeline.py on 12 images on the CPU, as a user runs it; its JSON report."""
    out = tmp_path / "pipeline.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURON_ATLAS_OFFLINE": "1"}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "pipeline.py"),
        *("--images", "12", "--device", "cpu", "--captions", "provided", "--floor-images", "8"),
        *("--workers", "1", "--workdir", str(tmp_path), "--json", str(out), *flags),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_pipeline_benchmark_runs_end_to_end_on_a_cpu(tmp_path: Path) -> None:
    result = run_benchmark(tmp_path, "--photo", "800x600", "--uncertainty-off-too", "--floor-before")
    assert result["images"] == 12 and result["image_size"] == [800, 600]
    # a floor each side of the run, and their mean the one the ratios use
    before, after = result["notes"]["floor_before_run"], result["notes"]["floor_after_run"]
    rate = result["floors_img_s"]["resnet18_forward_img_s"]
    assert rate == pytest.approx((before["resnet18_forward_img_s"] + after["resnet18_forward_img_s"]) / 2)
    assert {"ingest", "decode", "activations", "uncertainty", "uncertainty (off)"} <= set(result["stages"])
    assert result["ratios"]["run_over_floor"] > 1
    assert result["notes"]["uncertainty_phases"]["images_read_in_uncertainty"] <= 12
    # process CPU time beside wall time: per stage, per uncertainty phase and as ratios
    assert result["stages"]["activations"]["cpu_seconds"] > 0
    assert result["notes"]["uncertainty_phases"]["statistics_cpu_s"] >= 0
    assert result["ratios"]["cpu_run_over_floor"] > result["ratios"]["cpu_run_uncertainty_off_over_floor"] > 0
    # the default run's number format for the model passes, resolved and recorded
    assert result["pass_precision"] == "auto"
    assert result["notes"]["pass_precision_used"] in ("float32", "bfloat16")


@pytest.mark.slow
def test_pipeline_benchmark_growth_mode_reports_peak_memory_per_stage(tmp_path: Path) -> None:
    """`--uncertainty statistics` (the growth runs) runs no model pass, and every stage reports
    the process's peak resident memory."""
    result = run_benchmark(tmp_path, "--uncertainty", "statistics")
    assert result["uncertainty"] == "statistics"
    assert result["notes"]["options"]["uncertainty_budget"] == 0
    assert result["notes"]["uncertainty_phases"]["images_read_in_uncertainty"] == 0
    assert all(stage["peak_rss_gb"] > 0 for stage in result["stages"].values())
