"""The suite end to end: submit over HTTP, Celery workers per service, hierarchy over HTTP; it
must equal the embedded run's for the same images and options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuron_atlas import pipeline
from neuron_atlas_client.options import PipelineOptions
from tests.services.gateway.helpers import assert_same_document, wait_for, zip_folder

OPTIONS = {
    "allow_random_weights": True,
    "shard_size": 8,
    "batch_size": 8,
    "device": "cpu",
    # every uncertainty part on, lightly, so the equality covers it too
    "bootstrap_resamples": 50,
    "mc_samples": 2,
    "tta_samples": 1,
    "pruning_thresholds": [0.05],
    "ablation_random_sets": 2,
    "ablation_max_images": 2,
    "pruning_random_sets": 1,
}


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
    embedded = pipeline.run(sample_dir, tmp_path / "out", PipelineOptions(**OPTIONS)).document()
    suite = suite_job["hierarchy"]
    assert [c["id"] for c in suite["clusters"]] == [c["id"] for c in embedded["clusters"]]
    assert_same_document(_comparable(suite), _comparable(embedded))


def test_finished_job_reports_every_stage_done(suite_job: dict[str, Any]) -> None:
    job = suite_job["job"]
    assert job["images"] == 24 and job["stage"] == "assemble"
    assert job["progress"]["caption"] == {"done": 24, "total": 24}
    assert job["progress"]["activation"] == {"done": 24, "total": 24}
    assert all(p["done"] == p["total"] for p in job["progress"].values()), job["progress"]
    assert job["started_at"] and job["finished_at"] and job["error"] is None
    assert job["progress"]["uncertainty"] == {"done": 1, "total": 1}
    assert job["uncertainty"] == suite_job["hierarchy"]["uncertainty"]["summary"]
    assert job["labelling"]["source"] == "offline"


def test_cluster_endpoint_returns_that_cluster(suite: Any, suite_job: dict[str, Any]) -> None:
    job_id, cluster = suite_job["job"]["id"], suite_job["hierarchy"]["clusters"][-1]
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=30) as client:
        assert client.get(f"/v1/jobs/{job_id}/clusters/{cluster['id']}").json() == cluster
        assert client.get(f"/v1/jobs/{job_id}/clusters/L99-0").status_code == 404


def test_neuron_endpoint_lists_the_clusters_whose_group_holds_it(
    suite: Any, suite_job: dict[str, Any]
) -> None:
    hierarchy = suite_job["hierarchy"]
    neuron = hierarchy["clusters"][0]["neurons"][0]
    expected = [
        c["id"]
        for c in hierarchy["clusters"]
        if any((n["layer"], n["channel"]) == (neuron["layer"], neuron["channel"]) for n in c["neurons"])
    ]
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=30) as client:
        url = f"/v1/jobs/{suite_job['job']['id']}/neurons/{neuron['layer']}/{neuron['channel']}"
        found = client.get(url).json()
        assert [c["id"] for c in found["clusters"]] == expected
        assert found["clusters"][0]["support"] == neuron["support"]
        assert found["clusters"][0]["evidence"] == neuron["evidence"]
        assert neuron["evidence"]["interval"][0] <= neuron["support"] <= neuron["evidence"]["interval"][1]
        assert client.get(f"/v1/jobs/{suite_job['job']['id']}/neurons/layer1/99999").status_code == 404


def test_artifact_links_are_presigned_on_the_public_endpoint(suite: Any, suite_job: dict[str, Any]) -> None:
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=30) as client:
        listing = client.get(f"/v1/jobs/{suite_job['job']['id']}/artifacts").json()
    links = {a["name"]: a["url"] for a in listing["artifacts"]}
    assert {"hierarchy.json", "spec.json", "manifest.json", "groups.json", "partitions.npy"} <= set(links)
    assert (
        links["hierarchy.json"].startswith(suite.env["S3_PUBLIC_ENDPOINT"])
        and "X-Amz-Signature" in links["hierarchy.json"]
    )
    downloaded = httpx.get(links["hierarchy.json"], timeout=30)  # no API key: the signature is the grant
    assert (
        downloaded.status_code == 200
        and json.loads(downloaded.content)["clusters"] == suite_job["hierarchy"]["clusters"]
    )
