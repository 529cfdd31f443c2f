"""Relabel through the API: a finished job gets LLM labels from the labelling worker, with the
accounting in the job's status; captions, clusters and neurons stay as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.services.gateway.helpers import wait_for, zip_folder

OPTIONS = {
    "allow_random_weights": True,
    "shard_size": 12,
    "batch_size": 12,
    "device": "cpu",
    "layers": ["layer4"],
    "bootstrap_resamples": 20,
    "mc_samples": 0,
    "tta_samples": 0,
    "ablation_random_sets": 0,
    "pruning_random_sets": 0,
}
DONE = {"succeeded", "failed", "cancelled"}


def _groups(hierarchy: dict[str, Any]) -> list[Any]:
    return [(c["id"], c["images"], c["neurons"], c["difference_neurons"]) for c in hierarchy["clusters"]]


def test_relabel_uses_the_endpoint_reports_accounting_and_then_hits_the_cache(
    suite: Any, suite_llm: Any, sample_dir: Path
) -> None:
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        submitted = client.post(
            "/v1/jobs",
            files=[("files", ("images.zip", zip_folder(sample_dir), "application/zip"))],
            data={"spec": json.dumps({"options": OPTIONS})},
        )
        job = wait_for(client, submitted.headers["location"], DONE)
        assert job["status"] == "succeeded", job["error"]
        assert job["labelling"]["source"] == "offline" and job["labelling"]["accounting"]["requests"] == 0
        before = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
        n_clusters = len(before["clusters"])

        seen = suite_llm.requests
        answer = client.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": False})
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "running" and answer.json()["stage"] == "labelling"
        relabelled = wait_for(client, f"/v1/jobs/{job['id']}", DONE)
        assert relabelled["status"] == "succeeded", relabelled["error"]
        accounting = relabelled["labelling"]["accounting"]
        assert relabelled["labelling"]["source"] == "llm" and relabelled["labelling"]["model"] == "fake-model"
        sent = suite_llm.requests - seen
        assert sent > 0 and accounting["requests"] == sent and accounting["cache_hits"] == 0
        prompt, completion = (sum(s.usage[i] for s in suite_llm.seen[seen:] if s.usage) for i in (0, 1))
        assert (accounting["prompt_tokens"], accounting["completion_tokens"]) == (prompt, completion)

        after = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
        assert {c["label_source"] for c in after["clusters"]} == {"llm:fake-model@v1"}
        assert _groups(after) == _groups(before) and after["images"] == before["images"]

        seen = suite_llm.requests
        assert client.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": False}).status_code == 202
        again = wait_for(client, f"/v1/jobs/{job['id']}", DONE)
        assert again["labelling"]["accounting"]["requests"] == 0 == suite_llm.requests - seen
        assert again["labelling"]["accounting"]["cache_hits"] == sent - accounting["retries"]
        quality = again["labelling"]["quality"]
        assert 0 < quality["clusters_scored"] <= n_clusters and 0.0 <= quality["mean"] <= 1.0

        # A relabel cancelled at once stops the relabel, not the job: its result still stands.
        assert client.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": True}).status_code == 202
        assert client.post(f"/v1/jobs/{job['id']}:cancel").status_code == 202
        stopped = wait_for(client, f"/v1/jobs/{job['id']}", DONE)
        assert stopped["status"] == "succeeded", stopped
        assert client.get(f"/v1/jobs/{job['id']}/hierarchy").status_code == 200
        assert client.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": True}).status_code == 202
        assert wait_for(client, f"/v1/jobs/{job['id']}", DONE)["status"] == "succeeded"


def test_only_a_succeeded_job_can_be_relabelled(suite: Any) -> None:
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        missing = client.post("/v1/jobs/no-such-job:relabel", json={})
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        bad = client.post("/v1/jobs/no-such-job:relabel", json={"temperature": 3})
        assert bad.status_code in (404, 422)
