"""One job, several models (issue 27) through the real suite (gateway, Redis, S3, Celery
workers): a job of `model_ids` equals the two single-model jobs, model for model, and its own
comparison equals POST /v1/comparisons of those two jobs; what a spec may not name is refused at
submission with a 422 problem, another tenant's model above all."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuron_atlas_client import Client
from tests.comparison_runs import _changed_copy
from tests.integrations.test_remote_cli import remote, remote_env
from tests.services.gateway.helpers import LIGHT_OPTIONS, assert_same_document, wait_for
from tests.services.gateway.test_api import assert_problem, images, job_ids
from tests.services.gateway.test_models import upload
from tests.tiny_models import save_planted_resnet18

pytestmark = pytest.mark.slow
# The explorer's comparison view of a multi-model job: test_tenancy.py's matrix counts these as
# checked here (no key 401, another tenant 404, the owner 200).
UI_JOB_COMPARISON_ROUTES = {
    ("GET", "/ui/api/jobs/{job_id}/comparisons/{key}/summary"),
    ("GET", "/ui/api/jobs/{job_id}/comparisons/{key}/children"),
    ("GET", "/ui/api/jobs/{job_id}/comparisons/{key}/changed"),
    ("GET", "/ui/api/jobs/{job_id}/comparisons/{key}/concepts/{cluster_id}"),
}
IMAGES = 12
# The planted detectors read colour at any size; conv1 is where they are (tests/comparison_runs.py).
OPTIONS = {
    **{k: v for k, v in LIGHT_OPTIONS.items() if k != "allow_random_weights"},
    "layers": ["conv1"],
    "preprocessing": {"input_size": 64, "resize": 64},
}
# What differs between two runs of the same work: when, and where each side was read from.
WHEN = {"created_at", "generator"}


@pytest.fixture(scope="module")
def tenant_a(suite: Any) -> Any:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=180) as client:
        yield client


@pytest.fixture(scope="module")
def model_ids(tenant_a: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Tenant A's planted ResNet18 and the copy with its sand detectors moved, registered."""
    folder = tmp_path_factory.mktemp("multi-suite")
    original = save_planted_resnet18(folder / "original.safetensors")
    ids = []
    for path in (original, _changed_copy(original, folder / "moved.safetensors", "moved")):
        answer = upload(tenant_a, path, "resnet18")
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    return ids


def _submit(client: httpx.Client, sample_dir: Path, **options: Any) -> httpx.Response:
    spec = {"options": {**OPTIONS, **options}}
    return client.post("/v1/jobs", files=images(sample_dir, IMAGES), data={"spec": json.dumps(spec)})


def _finished(client: httpx.Client, answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    job = wait_for(client, answer.headers["location"], {"succeeded", "failed", "cancelled"}, timeout=600)
    assert job["status"] == "succeeded", job["error"]
    return job


def _without(document: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in keys}


@pytest.fixture(scope="module")
def jobs(tenant_a: httpx.Client, model_ids: list[str], sample_dir: Path) -> list[dict[str, Any]]:
    """Tenant A's finished job of both models, then the two single-model jobs."""
    submitted = [
        _submit(tenant_a, sample_dir, model_ids=model_ids),
        *(_submit(tenant_a, sample_dir, model_id=model_id) for model_id in model_ids),
    ]
    return [_finished(tenant_a, answer) for answer in submitted]


def test_a_multi_model_job_equals_the_two_single_model_jobs_and_their_comparison(
    suite: Any, tenant_a: httpx.Client, model_ids: list[str], sample_dir: Path, jobs: list[dict[str, Any]]
) -> None:
    multi, *singles = jobs
    # progress counts every model's activations and reaches its totals
    assert multi["progress"]["activation"] == {"done": 2 * IMAGES, "total": 2 * IMAGES}
    assert all(p["done"] == p["total"] for p in multi["progress"].values()), multi["progress"]
    for key, single in zip(model_ids, singles, strict=True):
        ours = tenant_a.get(f"/v1/jobs/{multi['id']}/models/{key}/hierarchy").raise_for_status().json()
        theirs = tenant_a.get(f"/v1/jobs/{single['id']}/hierarchy").raise_for_status().json()
        assert_same_document(_without(ours, WHEN), _without(theirs, WHEN))
    baseline = tenant_a.get(f"/v1/jobs/{multi['id']}/hierarchy").raise_for_status().json()
    assert baseline["models"]["target"]["model_id"] == model_ids[0]

    created = tenant_a.post("/v1/comparisons", json={"a": singles[0]["id"], "b": singles[1]["id"]})
    assert created.status_code in (200, 201), created.text
    separate = tenant_a.get(f"/v1/comparisons/{created.json()['id']}/comparison").raise_for_status().json()
    ours = tenant_a.get(f"/v1/jobs/{multi['id']}/comparison").raise_for_status().json()
    for side in ("a", "b"):
        for document in (ours, separate):
            document[side] = _without(document[side], {"source", "created_at"})
    assert_same_document(_without(ours, WHEN), _without(separate, WHEN))

    document = tenant_a.get(f"/v1/jobs/{multi['id']}/models").raise_for_status().json()
    assert document["baseline"] == model_ids[0] and [m["key"] for m in document["models"]] == model_ids
    assert len(document["concepts"]) == len(baseline["clusters"])
    # the Python client and the remote CLI answer the same
    with Client(suite.url, suite.keys["tenant-a"], timeout_s=60) as atlas:
        assert atlas.job_models(multi["id"]).document() == document
        assert atlas.hierarchy(multi["id"], model_ids[1]).models.target.model_id == model_ids[1]
        assert atlas.job_comparison(multi["id"]).b.source == f"models/{model_ids[1]}"
    shown = remote(suite, "compare", multi["id"], "--model", model_ids[1])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["summary"] == ours["summary"]
    got = remote(suite, "get", multi["id"], "--model", model_ids[1])
    assert got.returncode == 0 and json.loads(got.stdout)["models"]["target"]["model_id"] == model_ids[1]
    # a single-model job has no multi-model result, and names no other model
    one = singles[0]["id"]
    assert_problem(tenant_a.get(f"/v1/jobs/{one}/models"), 404, "not-found")
    assert_problem(tenant_a.get(f"/v1/jobs/{one}/comparison"), 404, "not-found")
    assert_problem(tenant_a.get(f"/v1/jobs/{one}/models/{model_ids[1]}/hierarchy"), 404, "not-found")


def test_what_a_multi_model_spec_may_not_name_is_refused_and_leaves_no_job(
    suite: Any, tenant_a: httpx.Client, model_ids: list[str], sample_dir: Path
) -> None:
    before = job_ids(tenant_a)
    five = [{"model": "resnet18", "key": f"m{i}"} for i in range(5)]
    body = assert_problem(_submit(tenant_a, sample_dir, models=five), 422, "invalid-spec")
    assert "at most 4" in json.dumps(body)
    twice = [model_ids[0], model_ids[0]]
    body = assert_problem(_submit(tenant_a, sample_dir, model_ids=twice), 422, "invalid-spec")
    assert f"two models have the key {model_ids[0]}" in json.dumps(body)
    both = [{"model": "resnet18"}, {"model": "resnet18", "key": "resnet18"}]
    assert_problem(_submit(tenant_a, sample_dir, models=both), 422, "invalid-spec")
    path = [{"model_id": model_ids[0]}, {"model": "resnet18", "weights": "/etc/passwd"}]
    body = assert_problem(_submit(tenant_a, sample_dir, models=path), 422, "invalid-spec")
    assert "options.models[1].weights is a file path" in body["title"]
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as tenant_b:
        b_before = job_ids(tenant_b)
        # tenant A's models are none of tenant B's, in the list as in model_id, and the answer is
        # the one a model that never existed gets
        for listed in ([model_ids[0], "f" * 32], ["f" * 32, model_ids[1]]):
            theirs = assert_problem(_submit(tenant_b, sample_dir, model_ids=listed), 422, "invalid-spec")
            assert "which is none of your models" in theirs["title"]
        stranger = assert_problem(
            _submit(tenant_b, sample_dir, models=[{"model": "resnet18"}, {"model_id": model_ids[0]}]),
            422,
            "invalid-spec",
        )
        never = assert_problem(
            _submit(tenant_b, sample_dir, models=[{"model": "resnet18"}, {"model_id": "e" * 32}]),
            422,
            "invalid-spec",
        )
        assert stranger["title"].replace(model_ids[0], "ID") == never["title"].replace("e" * 32, "ID")
        time.sleep(0.5)
        assert job_ids(tenant_b) == b_before
    assert job_ids(tenant_a) == before


def test_the_explorers_comparison_view_of_a_multi_model_job_is_the_owners_alone(
    suite: Any, tenant_a: httpx.Client, model_ids: list[str], jobs: list[dict[str, Any]]
) -> None:
    """The job's own comparison, as the explorer's comparison view answers it, for the owner only;
    the job's explorer page lists it."""
    multi, one = jobs[0]["id"], jobs[1]["id"]
    base, other = model_ids
    comparison = tenant_a.get(f"/v1/jobs/{multi}/comparison").raise_for_status().json()
    kinds = ("changed", "vanished", "appeared")
    # the most changed concept, if any (on 12 images, few changes can reach alpha)
    changed = sorted(comparison["concepts"], key=lambda c: c["status"] not in kinds)[0]
    paths = [
        path.format(job_id=multi, key=other, cluster_id=changed["id"])
        for _, path in sorted(UI_JOB_COMPARISON_ROUTES)
    ]
    with httpx.Client(base_url=suite.url, timeout=60) as client:
        for path in paths:
            assert tenant_a.get(path).status_code == 200, path
            theirs = client.get(path, headers=suite.headers("tenant-b"))
            never = client.get(path.replace(multi, "0" * 32), headers=suite.headers("tenant-b"))
            assert theirs.status_code == never.status_code == 404, path
            # another tenant's job answers exactly as one that never existed
            assert theirs.json()["title"].replace(multi, "ID") == never.json()["title"].replace(
                "0" * 32, "ID"
            )
            assert client.get(path).status_code == 401, path
    changed_path, children_path, concept_path, summary_path = paths
    summary = tenant_a.get(summary_path).json()
    assert summary["title"] == f"{base} against {other}"
    assert summary["models"]["a"]["job"] == multi and summary["models"]["b"]["job"] is None
    # the job's comparison.json, as the view marks it
    untested = changed["status"] == "unchanged" and changed.get("testable") is False
    assert tenant_a.get(concept_path).json()["marker"]["kind"] == (
        "untested" if untested else changed["status"]
    )
    assert tenant_a.get(changed_path).json()["total"] == sum(
        c["status"] in kinds for c in comparison["concepts"]
    )
    assert tenant_a.get(children_path).json()["items"]
    # the job's explorer page links to it; a single-model job's has no comparisons
    page = tenant_a.get(f"/ui/api/jobs/{multi}/summary")
    assert page.status_code == 200, page.text
    listed = page.json()["comparisons"]
    assert listed == [{"baseline": base, "key": other}]
    assert "comparisons" not in tenant_a.get(f"/ui/api/jobs/{one}/summary").json()
    # the baseline is not compared with itself, and a single-model job has no comparison
    for path in (
        f"/ui/api/jobs/{multi}/comparisons/{base}/summary",
        f"/ui/api/jobs/{one}/comparisons/{other}/summary",
    ):
        assert_problem(tenant_a.get(path), 404, "not-found")


def test_mlflow_log_of_a_multi_model_job_logs_each_comparison(
    suite: Any,
    tenant_a: httpx.Client,
    mlflow_server: str,
    model_ids: list[str],
    jobs: list[dict[str, Any]],
) -> None:
    """docs/comparison.md: `mlflow-log JOB_ID` of a multi-model suite job logs what the folder
    form logs: the baseline as a result, each comparison's summary metrics prefixed with its
    model's key, and its comparison.json under `comparisons/`."""
    from mlflow.tracking import MlflowClient

    multi = jobs[0]["id"]
    base, other = model_ids
    proc = subprocess.run(
        [sys.executable, "-m", "neuron_atlas.cli", "mlflow-log", multi, "--tracking-uri", mlflow_server,
         "--experiment", "multi-jobs"],
        env=remote_env(suite, None), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = proc.stdout.strip()
    run = client.get_run(run_id)
    comparison = tenant_a.get(f"/v1/jobs/{multi}/comparison").raise_for_status().json()
    baseline = tenant_a.get(f"/v1/jobs/{multi}/hierarchy").raise_for_status().json()
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["neuron_atlas.job_id"] == multi
    assert metrics["concepts"] == len(baseline["clusters"])
    assert metrics[f"comparison.{other}.changed"] == comparison["summary"]["changed"]
    assert metrics[f"comparison.{other}.layer.conv1.lost"] == comparison["layers"][0]["lost"]
    assert not any(name.startswith(f"comparison.{base}.") for name in metrics)
    logged = [a.path for a in client.list_artifacts(run_id, "comparisons")]
    assert logged == [f"comparisons/{other}.json"]
