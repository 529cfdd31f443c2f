"""`neuron-atlas remote`, run as a CI step would: a subprocess, output piped, key in the
environment, and exit statuses to branch on."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas.remote_cli import EXIT_AUTH, EXIT_CONFLICT, EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_USAGE
from tests.integrations.conftest import FinishedJob


def remote(
    suite: Any, *args: str, key: str | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NEURON_ATLAS_URL": suite.url,
        "NEURON_ATLAS_API_KEY": key if key is not None else suite.keys["tenant-a"],
    }
    return subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "remote", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_status_wait_get_and_list_answer_json_lines_when_piped(suite: Any, finished_job: FinishedJob) -> None:
    job_id = finished_job.job.id
    status = remote(suite, "status", job_id)
    assert status.returncode == 0, status.stderr
    assert lines(status)[0]["status"] == "succeeded"

    waited = remote(suite, "wait", job_id, "--timeout", "30")
    assert waited.returncode == 0 and lines(waited)[-1]["status"] == "succeeded"

    neuron = remote(suite, "get", job_id, "--neuron", "layer4/0")
    assert neuron.returncode == 0 and lines(neuron)[0]["layer"] == "layer4"

    listed = remote(suite, "list", "--limit", "3")
    assert listed.returncode == 0 and 1 <= len(lines(listed)) <= 3


def test_get_and_artifacts_write_files(suite: Any, finished_job: FinishedJob, tmp_path: Path) -> None:
    job_id = finished_job.job.id
    got = remote(suite, "get", job_id, "-o", str(tmp_path / "h.json"))
    assert got.returncode == 0, got.stderr
    assert len(json.loads((tmp_path / "h.json").read_text())["images"]) == 24
    downloaded = remote(
        suite, "artifacts", job_id, "--download", str(tmp_path / "a"), "--name", "groups.json"
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "a" / "groups.json").is_file()
    assert lines(downloaded) == [{"path": str(tmp_path / "a" / "groups.json")}]


def test_submit_wait_fails_the_step_when_the_job_fails(suite: Any, sample_dir: Path) -> None:
    flags = ["--allow-random-weights", "--layers", "no_such_layer", "--mc-samples", "0"]
    result = remote(suite, "submit", str(sample_dir), *flags, "--wait", "--timeout", "200", "--poll", "0.5")
    assert result.returncode == EXIT_JOB_FAILED, result.stdout + result.stderr
    assert lines(result)[-1]["status"] == "failed"
    assert "failed" in result.stderr and "what to do" in result.stderr


def test_on_a_terminal_it_prints_text_not_json(suite: Any, finished_job: FinishedJob) -> None:
    """Under a pseudo-terminal (util-linux `script`), as a person at a shell sees it."""
    if shutil.which("script") is None:
        pytest.skip("util-linux `script` is needed for a pseudo-terminal")
    command = shlex.join([sys.executable, "-m", "neuron_atlas.cli", "remote", "wait", finished_job.job.id])
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env={**os.environ, "NEURON_ATLAS_URL": suite.url, "NEURON_ATLAS_API_KEY": suite.keys["tenant-a"]},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout
    assert f"{finished_job.job.id}  succeeded" in result.stdout and not result.stdout.lstrip().startswith("{")


def test_errors_have_their_own_exit_statuses(suite: Any, finished_job: FinishedJob) -> None:
    assert remote(suite, "cancel", finished_job.job.id).returncode == EXIT_CONFLICT  # it has ended
    assert remote(suite, "status", "0" * 32).returncode == EXIT_NOT_FOUND
    refused = remote(suite, "status", "0" * 32, key="wrong-key")
    assert refused.returncode == EXIT_AUTH and "API key" in refused.stderr
    # The key is never a flag: it would end up in shell history and `ps`.
    assert remote(suite, "--api-key", "x", "list").returncode == EXIT_USAGE
    bad = remote(suite, "submit", "/no/such/folder")
    assert bad.returncode == EXIT_USAGE and "neither a folder" in bad.stderr
