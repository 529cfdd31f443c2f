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

from neuron_atlas_client.remote_cli import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_JOB_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
)
from shared.storage.thumbnails import thumbnail_ids
from tests.integrations.conftest import FinishedJob
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
LIGHT_FLAGS = ["--allow-random-weights", "--mc-samples", "0", "--bootstrap-resamples", "20"]
LIGHT_FLAGS += ["--ablation-random-sets", "0", "--pruning-random-sets", "0"]


def remote_env(suite: Any, key: str | None, url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NEURON_ATLAS_URL", "NEURON_ATLAS_API_KEY")}
    env["NEURON_ATLAS_URL"] = url if url is not None else suite.url
    if key != "":  # "": no key in the environment at all
        env["NEURON_ATLAS_API_KEY"] = key if key is not None else suite.keys["tenant-a"]
    return env


def remote(
    suite: Any, *args: str, key: str | None = None, timeout: float = 240, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "remote", *args],
        env=remote_env(suite, key, url),
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


def test_models_upload_list_show_layers_submit_and_delete(suite: Any, sample_dir: Path) -> None:
    """The registry from a shell: register a model, explain it with `submit --model-id`, remove it."""
    from tests.services.gateway.test_tenancy import tiny_model_file

    uploaded = remote(
        suite, "models", "upload", str(tiny_model_file()), "--architecture", "timm:test_convnext"
    )
    assert uploaded.returncode == EXIT_OK, uploaded.stderr
    model = lines(uploaded)[0]
    assert model["architecture"] == "timm:test_convnext" and model["num_classes"] == 3
    model_id = model["id"]
    try:
        listed = remote(suite, "models", "list")
        assert listed.returncode == EXIT_OK and model_id in [m["id"] for m in lines(listed)]
        shown = remote(suite, "models", "show", model_id)
        assert shown.returncode == EXIT_OK and lines(shown)[0]["sha256"] == model["sha256"]
        layers = remote(suite, "models", "layers", model_id)
        assert layers.returncode == EXIT_OK, layers.stderr
        defaults = [layer["name"] for layer in lines(layers)[0]["layers"] if layer["default"]]
        assert defaults and all(name.startswith("stages.") for name in defaults)
        job = remote(
            suite, "submit", str(sample_dir), "--model-id", model_id, *LIGHT_FLAGS,
            "--wait", "--timeout", "240", "--poll", "0.5",
        )  # fmt: skip
        assert job.returncode == EXIT_OK, job.stdout + job.stderr
        job_id = lines(job)[0]["id"]
        hierarchy = json.loads(remote(suite, "get", job_id).stdout)
        assert hierarchy["models"]["target"]["model_id"] == model_id
        assert {layer["name"] for layer in hierarchy["layers"]} == set(defaults)
    finally:
        deleted = remote(suite, "models", "delete", model_id)
    assert deleted.returncode == EXIT_OK and lines(deleted) == [{"deleted": model_id}]
    assert remote(suite, "models", "show", model_id).returncode == EXIT_NOT_FOUND


def test_models_import_names_the_source_kind(suite: Any) -> None:
    missing = remote(suite, "models", "import", "bucket", "no/such/prefix/", "--architecture", "resnet18")
    assert missing.returncode == EXIT_USAGE, missing.stderr  # 422: nothing to import there
    assert "neuron-atlas remote: error: 422" in missing.stderr


def test_submit_with_a_weights_file_is_refused_before_anything_is_sent(suite: Any, sample_dir: Path) -> None:
    """`--weights` always got a 422 from the gateway, after the upload; now it is refused at once,
    with the way to register the file. Nothing listens at the URL: a request would exit 11."""
    closed = f"http://127.0.0.1:{free_port()}"
    result = remote(
        suite, "submit", str(sample_dir), "--weights", "model.safetensors", "--model", "resnet18", url=closed
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "neuron-atlas remote models upload model.safetensors --architecture resnet18" in result.stderr
    assert "--model-id" in result.stderr


def test_without_a_key_nothing_is_sent_and_the_error_says_how_to_give_one(suite: Any) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # a request would fail to connect (exit 11)
    result = remote(suite, "list", key="", url=closed)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "no API key, so nothing was sent: set NEURON_ATLAS_API_KEY" in result.stderr
    assert "--no-key" in result.stderr
    # --no-key sends without one (for a development gateway); this gateway wants a key
    assert remote(suite, "--no-key", "list", key="").returncode == EXIT_AUTH


def test_without_a_url_the_error_names_the_flag(suite: Any) -> None:
    env = {k: v for k, v in remote_env(suite, None).items() if k != "NEURON_ATLAS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "remote", "list"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == EXIT_USAGE
    assert "pass --url URL or set NEURON_ATLAS_URL" in result.stderr and "url=" not in result.stderr


def test_a_quota_wait_is_said_on_stderr(suite: Any, sample_dir: Path) -> None:
    """`tenant-quota` may run one job at a time (Retry-After: 7 s in the suite). With its slot
    taken, `submit` says it waits, and submits once the slot is free."""
    from shared.jobs.jobstore import JobStore

    jobs = JobStore.from_url(suite.env["REDIS_URL"])
    holder = "f" * 32
    assert jobs.take_slot("tenant-quota", holder, 1)
    process = subprocess.Popen(
        [sys.executable, "-m", "neuron_atlas.cli", "remote", "submit", str(next(sample_dir.glob("*.png")))],
        env=remote_env(suite, suite.keys["tenant-quota"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # blocks until the client says it waits
        jobs.release_slot("tenant-quota", holder)
        out, rest = process.communicate(timeout=60)
    finally:
        jobs.release_slot("tenant-quota", holder)
        if process.poll() is None:
            process.kill()
    assert first == "neuron-atlas remote: quota: waiting 7 s before retrying (Retry-After)\n", first + rest
    assert process.returncode == EXIT_OK, rest
    job_id = json.loads(out.splitlines()[0])["id"]
    remote(suite, "cancel", job_id, key=suite.keys["tenant-quota"])  # frees the tenant's slot


def test_downloaded_artifacts_make_a_report_with_pictures(
    suite: Any, finished_job: FinishedJob, tmp_path: Path
) -> None:
    """`artifacts --download` brings thumbs/ too, so the report of the download shows pictures
    (before, it showed file names)."""
    folder = tmp_path / "download"
    downloaded = remote(suite, "artifacts", finished_job.job.id, "--download", str(folder))
    assert downloaded.returncode == EXIT_OK, downloaded.stderr
    hierarchy = json.loads((folder / "hierarchy.json").read_text())
    assert thumbnail_ids(folder / "thumbs") == {image["id"] for image in hierarchy["images"]}
    assert not (folder / "images").exists()  # the uploaded originals stay in the bucket
    report = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "report", str(folder)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    pages = list((folder / "explorer" / "data" / "concept").glob("*.js"))
    assert pages and all('"thumb":false' not in p.read_text() for p in pages)
    assert any('"thumb":true' in p.read_text() for p in pages)
    assert thumbnail_ids(folder / "explorer" / "thumbs") == {image["id"] for image in hierarchy["images"]}
