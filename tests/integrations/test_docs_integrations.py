"""docs/integrations.md, run as written against the session's suite: the shell example, the
Python task, the webhook receiver's check, and the CI step's commands (parsed by the CLI)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from neuron_atlas.cli import build_parser
from neuron_atlas_client import Client
from neuron_atlas_client.remote_cli import build_parser as build_remote_parser
from tests.integrations.conftest import LIGHT
from tests.integrations.receiver import Receiver
from tests.readme_examples import DOCS, bash_blocks

# The suite's workers have no ImageNet weights and two cores: the light options of the shared job.
LIGHT_FLAGS = "--allow-random-weights --layers layer4 --bootstrap-resamples 20 --mc-samples 0 " + (
    "--ablation-random-sets 0 --pruning-random-sets 0"
)


PAGE = DOCS / "integrations.md"


def section(kind: str) -> list[str]:
    """The ```{kind} blocks of the Integrations page, in order."""
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_shell_example_runs_and_logs_to_mlflow(
    suite: Any, mlflow_server: str, sample_dir: Path, receiver: Receiver, tmp_path: Path
) -> None:
    (block,) = bash_blocks(PAGE)
    script = block.script(
        substitutions={
            "http://localhost:8000": suite.url,
            "NEURON_ATLAS_API_KEY=...": f"NEURON_ATLAS_API_KEY={suite.keys['tenant-a']}",
            "--wait": f"{LIGHT_FLAGS} --callback {receiver.url}/readme --wait",
            "http://localhost:5000": mlflow_server,
        }
    )
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / ".venv").symlink_to(Path(sys.prefix))
    shutil.copytree(sample_dir, cwd / "my-images")
    (cwd / "model.safetensors").write_bytes(b"the checkpoint")
    # The code under test, whichever checkout the venv was installed from.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    lines = [json.loads(x) for x in (cwd / "job.jsonl").read_text().splitlines()]
    assert lines[-1]["status"] == "succeeded"
    assert json.loads((cwd / "results" / "hierarchy.json").read_text())["images"]
    run_id = proc.stdout.strip().splitlines()[-1]
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(mlflow_server).get_run(run_id).data.tags
    assert tags["neuron_atlas.model_sha256"] == hashlib.sha256(b"the checkpoint").hexdigest()
    assert tags["neuron_atlas.job_id"] == lines[0]["id"]


def test_the_webhook_check_accepts_a_real_delivery_and_refuses_a_forged_one(
    atlas: Client, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    (message,) = receiver.wait_for("/readme", 1, timeout=60)[:1]
    monkeypatch.setenv("NEURON_ATLAS_WEBHOOK_SECRET", atlas.webhook_secret())
    check = section("python")[2]
    assert len([line for line in check.strip().splitlines() if line.strip()]) <= 12  # "in ten lines"
    namespace: dict[str, Any] = {}
    exec(compile(check, "docs/integrations.md webhook check", "exec"), namespace)
    assert namespace["handle"](message.body, message.headers) == 204
    forged = message.body.replace(b'"succeeded"', b'"failed"', 1)
    assert forged != message.body
    assert namespace["handle"](forged, message.headers) == 401


def test_the_python_task_runs_a_job_and_logs_it(
    suite: Any, mlflow_server: str, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, wiring = section("python")[:2]
    monkeypatch.setenv("NEURON_ATLAS_URL", suite.url)
    monkeypatch.setenv("NEURON_ATLAS_API_KEY", suite.keys["tenant-a"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert '{"model": "resnet18"}' in task
    code = task.replace('{"model": "resnet18"}', repr({**LIGHT, "model": "resnet18"}))
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/integrations.md task", "exec"), namespace)
    job_id = namespace["explain_checkpoint"](str(sample_dir), "cd" * 32)
    with Client() as atlas:
        assert atlas.job(job_id).status == "succeeded"
    # The Airflow wiring needs Airflow; it must at least be Python that calls the task.
    assert "explain_checkpoint" in {n.id for n in ast.walk(ast.parse(wiring)) if isinstance(n, ast.Name)}


def test_the_ci_steps_commands_are_ones_the_cli_takes() -> None:
    (workflow,) = section("yaml")[:1]
    steps = yaml.safe_load(workflow)["jobs"]["explain-checkpoint"]["steps"]
    commands = [
        line.strip() for s in steps for line in s.get("run", "").splitlines() if "neuron-atlas" in line
    ]
    assert any("remote submit" in c and "--wait" in c for c in commands)
    for command in commands:
        if command.startswith("pip "):
            continue
        argv = shlex.split(re.sub(r'"\$\(.*?\)"', "0" * 32, command).split(">")[0])
        assert argv[0] in ("neuron-atlas", "neuron-atlas-remote")
        parser = build_parser() if argv[0] == "neuron-atlas" else build_remote_parser()
        parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown flag
