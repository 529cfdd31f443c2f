"""`POST /v1/comparisons` through the real suite (gateway, Redis, S3, an uncertainty worker that
computes it), the client's calls and `neuron-atlas remote compare` (docs/comparison.md)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuron_atlas_client import ApiError, Client
from services.uncertainty.comparison import compare_results
from shared.storage.stores import LocalStore
from tests.integrations.conftest import LIGHT, FinishedJob
from tests.integrations.test_remote_cli import remote

pytestmark = pytest.mark.slow


def test_a_job_compared_with_itself_on_the_suite_changes_nothing_and_equals_the_local_comparison(
    atlas: Client, finished_job: FinishedJob, tmp_path: Path
) -> None:
    job_id = finished_job.job.id
    created = atlas.compare(job_id, job_id)
    assert (created.a, created.b, created.mode) == (job_id, job_id, "same_layers")
    assert created.summary.changed == 0 and created.summary.significant_changes == 0
    assert created.summary.min_kept_share == 1.0
    suite = atlas.comparison(created.id)
    # the same answer as `neuron-atlas compare` on the job's downloaded artifacts
    folder = tmp_path / "job"
    wanted = [a.name for a in atlas.artifacts(job_id).artifacts]
    atlas.download_artifacts(
        job_id, folder, [n for n in wanted if n == "hierarchy.json" or n.startswith("activations/")]
    )
    local = compare_results(LocalStore(folder), LocalStore(folder), (job_id, job_id))
    assert suite.document()["concepts"] == local.document()["concepts"]
    assert suite.summary == local.summary and suite.a.source == job_id


# Every comparison route: tests/services/gateway/test_tenancy.py's matrix counts them as checked here.
COMPARISON_ROUTES = {
    ("POST", "/v1/comparisons"),
    ("GET", "/v1/comparisons/{comparison_id}"),
    ("GET", "/v1/comparisons/{comparison_id}/comparison"),
}


def test_comparisons_are_the_tenants_own_and_errors_are_problems(
    suite: Any, atlas: Client, finished_job: FinishedJob
) -> None:
    job_id = finished_job.job.id
    created = atlas.compare(job_id, job_id)
    with httpx.Client(base_url=suite.url, timeout=60) as anonymous:
        for method, path in COMPARISON_ROUTES:  # every route, no key: 401
            answer = anonymous.request(
                method,
                path.replace("{comparison_id}", created.id),
                json={"a": job_id, "b": job_id} if method == "POST" else None,
            )
            assert answer.status_code == 401, (method, path)
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as other:
        for path in (f"/v1/comparisons/{created.id}", f"/v1/comparisons/{created.id}/comparison"):
            answer = other.get(path)
            assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"
        # another tenant's job is as absent as one that never existed
        refused = other.post("/v1/comparisons", json={"a": job_id, "b": job_id})
        assert refused.status_code == 404 and f"No job {job_id}" in refused.json()["title"]
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=60) as mine:
        assert mine.get(f"/v1/comparisons/{created.id}").json()["summary"]["changed"] == 0
        bad = mine.post("/v1/comparisons", json={"a": job_id})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        assert mine.get("/v1/comparisons/not-an-id").status_code == 422
    with pytest.raises(ApiError) as missing:
        atlas.comparison("0" * 32)
    assert missing.value.status == 404


def test_jobs_over_other_images_are_refused_by_the_worker_with_what_to_do(
    atlas: Client, finished_job: FinishedJob, sample_dir: Path, tmp_path: Path
) -> None:
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    with (sample_dir / "metadata.csv").open() as handle:
        rows = list(csv.DictReader(handle))[:12]
    for row in rows:
        shutil.copy(sample_dir / row["file_name"], fewer / row["file_name"])
    with (fewer / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file_name", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    other = atlas.wait(atlas.submit(fewer, LIGHT).id, timeout_s=300, poll_interval_s=0.5)
    assert other.status == "succeeded", other.error
    with pytest.raises(ApiError) as refused:
        atlas.compare(finished_job.job.id, other.id)
    assert refused.value.status == 422
    assert "not over the same images" in refused.value.problem.title
    assert refused.value.problem.fix and "same image folder" in refused.value.problem.fix


def test_remote_compare_writes_the_comparison_and_applies_the_gates(
    suite: Any, finished_job: FinishedJob, tmp_path: Path
) -> None:
    job_id = finished_job.job.id
    out = tmp_path / "comparison.json"
    done = remote(suite, "compare", job_id, job_id, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["summary"]["changed"] == 0
    document = json.loads(out.read_text())
    concept = next(c for c in document["concepts"] if c["a"]["group_size"] > 0)
    kept = remote(suite, "compare", job_id, job_id, "--fail-if-lost", concept["id"])
    assert kept.returncode == 0, kept.stderr
    # the budget tests the largest concepts: a tested one passes a causal gate against itself, an
    # untested one cannot be checked, so it fails
    tested = next(c["id"] for c in document["concepts"] if c["a"]["causal"]["status"] == "tested")
    assert remote(suite, "compare", job_id, job_id, "--fail-if-causal-drop", f"{tested}=0").returncode == 0
    untested = next(c["id"] for c in document["concepts"] if c["a"]["causal"]["status"] != "tested")
    failed = remote(suite, "compare", job_id, job_id, "--fail-if-causal-drop", f"{untested}=0.1")
    assert failed.returncode == 1 and "cannot be checked: not" in failed.stderr
    unknown = remote(suite, "compare", job_id, job_id, "--fail-if-lost", "no such concept")
    assert unknown.returncode == 2 and "No concept is called" in unknown.stderr
