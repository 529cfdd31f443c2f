"""The suite end to end: submit over HTTP, Celery workers per service, hierarchy over HTTP; it
must equal the embedded run's for the same images and options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_for, zip_folder

from neuron_atlas import pipeline
from shared.options import PipelineOptions

OPTIONS = {"allow_random_weights": True, "shard_size": 8, "batch_size": 8, "device": "cpu"}


def _comparable(hierarchy: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hierarchy.items() if k not in ("created_at", "generator")}


@pytest.fixture(scope="module")
def suite_job(suite: Any, sample_dir: Path) -> dict[str, Any]:
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        response = client.post(
            "/v1/jobs",
            files=[("files", ("images.zip", zip_folder(sample_dir), "application/zip"))],
            data={"spec": json.dumps({"options": OPTIONS})},
        )
        assert response.status_code == 202, response.text
        job = wait_for(client, response.headers["location"], {"succeeded", "failed", "cancelled"})
        hierarchy = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
    return {"job": job, "hierarchy": hierarchy}


def test_suite_hierarchy_equals_the_embedded_run(
    suite_job: dict[str, Any], sample_dir: Path, tmp_path: Path
) -> None:
    assert suite_job["job"]["status"] == "succeeded", suite_job["job"]["error"]
    embedded = pipeline.run(sample_dir, tmp_path / "out", PipelineOptions(**OPTIONS))
    suite = suite_job["hierarchy"]
    assert [c["id"] for c in suite["clusters"]] == [c["id"] for c in embedded["clusters"]]
    for ours, theirs in zip(suite["clusters"], embedded["clusters"], strict=True):
        assert ours == theirs, ours["id"]
    assert _comparable(suite) == _comparable(embedded)


def test_finished_job_reports_every_stage_done(suite_job: dict[str, Any]) -> None:
    job = suite_job["job"]
    assert job["images"] == 24 and job["stage"] == "assemble"
    assert job["progress"]["caption"] == {"done": 24, "total": 24}
    assert job["progress"]["activation"] == {"done": 24, "total": 24}
    assert all(p["done"] == p["total"] for p in job["progress"].values()), job["progress"]
    assert job["started_at"] and job["finished_at"] and job["error"] is None
