"""The input check in the suite: a registered model trained at 32 px, run at its registered
(ImageNet) transform on labelled images. The job records the warning (GET /v1/jobs/{id} and
the hierarchy); with options.strict it fails with it as problem+json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.helpers import LIGHT_OPTIONS, wait_for, zip_folder
from tests.tiny_models import write_striped_collection


@pytest.fixture(scope="module")
def striped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_striped_collection(tmp_path_factory.mktemp("striped"), per_class=8)  # the suite takes 40


@pytest.fixture(scope="module")
def api(suite: Any) -> Any:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=180) as client:
        yield client


@pytest.fixture(scope="module")
def model_id(api: httpx.Client, striped: Path) -> str:
    with (striped / "model.safetensors").open("rb") as weights:
        answer = api.post(
            "/v1/models",
            files={"weights": ("striped.safetensors", weights, "application/octet-stream")},
            data={"architecture": "torchvision:resnet18"},  # no preprocessing: ImageNet's, 224 px
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def submit(api: httpx.Client, striped: Path, model_id: str, **options: Any) -> dict[str, Any]:
    spec = {
        "options": {k: v for k, v in LIGHT_OPTIONS.items() if k != "allow_random_weights"}
        | {"model_id": model_id, "bootstrap_resamples": 0, **options},
        "labels": {name: str(c) for name, c in json.loads((striped / "labels.json").read_text()).items()},
    }
    answer = api.post(
        "/v1/jobs",
        files=[("files", ("images.zip", zip_folder(striped / "images"), "application/zip"))],
        data={"spec": json.dumps(spec)},
    )
    assert answer.status_code == 202, answer.text
    return wait_for(api, answer.headers["location"], {"succeeded", "failed", "cancelled"})


def test_the_job_records_the_wrong_input_size_with_its_fix(api, striped, model_id):
    job = submit(api, striped, model_id)
    assert job["status"] == "succeeded", job["error"]
    [warning] = job["warnings"]
    assert warning["kind"] == "input-size"
    assert "trained on 32 px inputs, not 224 px crop of a 256 px resize" in warning["message"]
    assert '"input_size": 32, "resize": 32' in warning["fix"] and "options.preprocessing" in warning["fix"]
    hierarchy = api.get(f"/v1/jobs/{job['id']}/hierarchy").json()
    assert hierarchy["warnings"] == [warning]


def test_a_strict_job_fails_with_the_warning_as_problem_details(api, striped, model_id):
    job = submit(api, striped, model_id, strict=True)
    assert job["status"] == "failed"
    error = job["error"]
    assert error["type"].endswith("model-input-mismatch") and error["title"] == "The groups stage failed"
    [warning] = job["warnings"]  # recorded on the failed job too
    assert error["detail"] == warning["message"] and error["fix"] == warning["fix"]


def test_with_its_training_size_the_job_has_no_warning(api, striped, model_id):
    job = submit(api, striped, model_id, preprocessing={"input_size": 32, "resize": 32}, strict=True)
    assert job["status"] == "succeeded", job["error"]
    assert job["warnings"] == []
