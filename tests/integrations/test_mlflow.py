"""`neuron-atlas mlflow-log` and the client's helper, against a real `mlflow server` process with a
file store (the `mlflow_server` fixture)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from neuron_atlas.client import Client
from tests.integrations.conftest import FinishedJob

ROOT = Path(__file__).resolve().parents[2]


def run_data(url: str, run_id: str) -> tuple[Any, list[str], list[str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    run = client.get_run(run_id)
    top = [a.path for a in client.list_artifacts(run_id)]
    explorer = [a.path for a in client.list_artifacts(run_id, "explorer")]
    return run, top, explorer


def test_mlflow_log_of_a_result_folder(mlflow_server: str, embedded_result: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "result"
    shutil.copytree(embedded_result, folder)
    weights = tmp_path / "checkpoint.safetensors"
    weights.write_bytes(b"stand-in checkpoint bytes")
    proc = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "mlflow-log", str(folder), "--tracking-uri", mlflow_server,
         "--experiment", "ci-checkpoints", "--run-name", "embedded", "--model-sha256", "ab" * 32],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    run, top, explorer = run_data(mlflow_server, run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "embedded"
    assert "hierarchy.json" in top and "explorer/index.html" in explorer
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert metrics["concepts"] > 0 and metrics["images"] == 24
    assert 0 <= metrics["reliable_share"] <= 1 and 0 <= metrics["selective_share"] <= 1
    assert 0 <= metrics["label_quality_mean"] <= 1
    assert "causal_share" not in metrics  # the run made no causal checks (ablation_random_sets 0)
    assert params["layers"] == "layer3,layer4" and params["top_fraction"] == "0.1"
    assert tags["neuron_atlas.model_id"] == "resnet18" and tags["neuron_atlas.model_sha256"] == "ab" * 32
    assert len(tags["neuron_atlas.result_sha256"]) == 64


def test_client_helper_logs_a_suite_job(mlflow_server: str, atlas: Client, finished_job: FinishedJob) -> None:
    run_id = atlas.log_to_mlflow(finished_job.job.id, tracking_uri=mlflow_server, experiment="suite-jobs")
    run, top, explorer = run_data(mlflow_server, run_id)
    assert run.data.tags["neuron_atlas.job_id"] == finished_job.job.id
    assert run.data.tags["neuron_atlas.model_sha256"] == "unknown"  # random weights: no checkpoint
    assert run.data.metrics["images"] == finished_job.job.images
    assert run.data.params["layers"] == "layer4"
    assert "hierarchy.json" in top and "explorer/index.html" in explorer


def test_mlflow_log_refuses_what_is_neither_a_folder_nor_a_job(mlflow_server: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "mlflow-log", "no-such", "--tracking-uri", mlflow_server],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "neither a result folder nor a job id" in proc.stderr
