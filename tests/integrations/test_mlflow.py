"""`neuron-atlas mlflow-log` and the client's helper, against a real `mlflow server` process with a
file store (the `mlflow_server` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas.cli import main as cli_main
from neuron_atlas_client import Client
from tests.comparison_runs import PlantedRuns
from tests.integrations.conftest import FinishedJob
from tests.neuron_atlas.test_multi_model import multi_run  # noqa: F401 (a fixture: one tiny multi-model run)

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


@pytest.mark.slow
def test_mlflow_log_of_a_comparison_folder(
    mlflow_server: str, planted_runs: PlantedRuns, tmp_path: Path
) -> None:
    """docs/comparison.md: `neuron-atlas mlflow-log compare-v4` logs the comparison's summary."""
    folder = tmp_path / "compare-v4"
    compare = [str(planted_runs.original), str(planted_runs.zeroed), "--out", str(folder)]
    assert cli_main(["-q", "compare", *compare]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "mlflow-log", str(folder), "--tracking-uri", mlflow_server,
         "--experiment", "promotions", "--run-name", "v3-to-v4"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run, top, _ = run_data(mlflow_server, proc.stdout.strip())
    comparison = json.loads((folder / "comparison.json").read_text())
    metrics, tags = run.data.metrics, run.data.tags
    assert "comparison.json" in top and run.info.run_name == "v3-to-v4"
    assert metrics["comparison.changed"] == comparison["summary"]["changed"] == 4
    assert metrics["comparison.significant_changes"] == comparison["summary"]["significant_changes"]
    assert metrics["comparison.min_kept_share"] == comparison["summary"]["min_kept_share"]
    assert metrics["comparison.layer.conv1.lost"] == comparison["layers"][0]["lost"]
    assert tags["neuron_atlas.comparison.b.source"] == str(planted_runs.zeroed)
    assert tags["neuron_atlas.comparison.a.architecture"] == "resnet18"


def test_mlflow_log_refuses_what_is_neither_a_folder_nor_a_job(mlflow_server: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "mlflow-log", "no-such", "--tracking-uri", mlflow_server],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "neither a result folder nor a job id" in proc.stderr


def cli(args: list[str], cwd: Path, block_mlflow: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; `block_mlflow`: as if the `mlflow` extra were not installed."""
    block = "sys.modules['mlflow'] = None; " if block_mlflow else ""
    code = f"import sys; {block}from neuron_atlas.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.mark.parametrize("target", ["RESULT_DIR", "0123456789abcdef0123456789abcdef"])
def test_mlflow_log_without_the_extra_says_what_to_install(tmp_path: Path, target: str) -> None:
    (tmp_path / "result").mkdir()
    args = ["mlflow-log", str(tmp_path / "result") if target == "RESULT_DIR" else target]
    proc = cli(args, tmp_path, block_mlflow=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "neuron-atlas: error: mlflow-log needs the MLflow client, which is not installed.",
        "  what to do: pip install 'neuron-atlas[mlflow]'",
    ]


def test_mlflow_refusing_a_file_store_is_one_error_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "result").mkdir()  # MLflow refuses the store before the folder is read
    proc = cli(["mlflow-log", str(tmp_path / "result"), "--tracking-uri", "./mlruns"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "MlflowException" not in proc.stderr
    error, fix = proc.stderr.splitlines()[-2:]
    assert error.startswith("neuron-atlas: error: MLflow refused the tracking URI ./mlruns: ")
    assert "sqlite:///mlflow.db" in fix and "MLFLOW_ALLOW_FILE_STORE=true" in fix
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_mlflow_log_of_a_multi_model_result_logs_each_comparison(
    mlflow_server: str,
    multi_run: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """A multi-model result (`run --also-model`): its baseline as a result, and each comparison's
    summary metrics, prefixed with the compared model's key, and its comparison.json."""
    import shutil

    folder = tmp_path / "multi"
    shutil.copytree(multi_run, folder)
    proc = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "mlflow-log", str(folder), "--tracking-uri", mlflow_server,
         "--experiment", "multi"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run, top, explorer = run_data(mlflow_server, proc.stdout.strip())
    comparison = json.loads((folder / "comparisons" / "moved.json").read_text())
    baseline = json.loads((folder / "models" / "original" / "hierarchy.json").read_text())
    metrics = run.data.metrics
    assert metrics["concepts"] == len(baseline["clusters"]) and "explorer/index.html" in explorer
    assert "hierarchy.json" in top and "comparisons" in top
    assert metrics["comparison.moved.changed"] == comparison["summary"]["changed"] > 0
    assert metrics["comparison.moved.significant_changes"] == comparison["summary"]["significant_changes"]
    assert metrics["comparison.moved.layer.conv1.lost"] == comparison["layers"][0]["lost"]
    assert run.data.tags["neuron_atlas.comparison.moved.architecture"] == "resnet18"
    assert not any(name.startswith("comparison.original.") for name in metrics)
