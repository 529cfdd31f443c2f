"""The model registry (/v1/models) against the running suite: real gateway, Celery workers,
Redis, SeaweedFS and an MLflow tracking server.

The planted model: a ResNet18 whose conv1 holds colour detectors for the sample's backgrounds
(tests/tiny_models.py). Uploaded through the API, it must give the embedded CLI's hierarchy for
the same file, with the planted detectors in the groups of their concepts."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuron_atlas.cli import main as cli_main
from tests.services.gateway.helpers import assert_same_document, wait_for, zip_folder
from tests.tiny_models import planted_colour_detectors, save_planted_resnet18

# conv1 holds the planted detectors; light uncertainty so the equality covers it too.
OPTIONS = {
    "layers": ["conv1", "layer1"],
    "shard_size": 16,
    "batch_size": 16,
    "device": "cpu",
    "bootstrap_resamples": 20,
    "mc_samples": 2,
    "tta_samples": 1,
    "pruning_thresholds": [0.05],
    "ablation_random_sets": 2,
    "ablation_max_images": 2,
    "pruning_random_sets": 1,
}
CONCEPT_BACKGROUNDS = {"circle": "sand", "square": "night sky", "triangle": "grass"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def planted_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_planted_resnet18(tmp_path_factory.mktemp("planted") / "planted-resnet18.safetensors")


@pytest.fixture(scope="module")
def api(suite: Any) -> Any:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=180) as client:
        yield client


def upload(client: httpx.Client, path: Path, architecture: str, **fields: str) -> httpx.Response:
    with path.open("rb") as f:
        return client.post(
            "/v1/models",
            files={"weights": (path.name, f, "application/octet-stream")},
            data={"architecture": architecture, **fields},
        )


@pytest.fixture(scope="module")
def registered(api: httpx.Client, planted_file: Path) -> dict[str, Any]:
    response = upload(api, planted_file, "torchvision:resnet18")
    assert response.status_code == 201, response.text
    return dict(response.json())


def stored_model_keys(suite: Any, s3_server: Any, tenant: str) -> list[str]:
    client = s3_server.client()
    return [
        o.object_name for o in client.list_objects(suite.bucket, prefix=f"models/{tenant}/", recursive=True)
    ]


def test_upload_answers_id_sha256_and_parameter_count(registered: dict[str, Any], planted_file: Path) -> None:
    import torchvision.models as tvm

    expected = sum(p.numel() for p in tvm.resnet18(weights=None, num_classes=6).parameters())
    assert registered["sha256"] == sha256(planted_file)
    assert registered["parameters"] == expected
    assert registered["num_classes"] == 6  # read off the file's head
    assert registered["architecture"] == "resnet18"
    assert registered["preprocessing"]["input_size"] == 224
    assert registered["source"] == {"kind": "upload", "file_name": planted_file.name}


def test_model_routes_describe_list_and_give_layers(api: httpx.Client, registered: dict[str, Any]) -> None:
    model_id = registered["id"]
    assert api.get(f"/v1/models/{model_id}").json() == registered
    listed = api.get("/v1/models", params={"page_size": 100}).json()
    assert model_id in [m["id"] for m in listed["items"]]
    layers = api.get(f"/v1/models/{model_id}/layers").json()
    by_name = {layer["name"]: layer for layer in layers["layers"]}
    assert by_name["conv1"]["channels"] == 64 and not by_name["conv1"]["default"]
    assert [n for n, layer in by_name.items() if layer["default"]] == ["layer1", "layer2", "layer3", "layer4"]
    assert "layer1.0.relu" not in by_name  # runs twice per pass: not readable


def test_uploaded_model_gives_the_embedded_clis_hierarchy_and_finds_the_planted_detectors(
    api: httpx.Client, registered: dict[str, Any], planted_file: Path, sample_dir: Path, tmp_path: Path
) -> None:
    response = api.post(
        "/v1/jobs",
        files=[("files", ("images.zip", zip_folder(sample_dir), "application/zip"))],
        data={"spec": json.dumps({"options": {**OPTIONS, "model_id": registered["id"]}})},
    )
    assert response.status_code == 202, response.text
    job = wait_for(api, response.headers["location"], {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job["error"]
    suite = api.get(f"/v1/jobs/{job['id']}/hierarchy").json()

    flags = [
        f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in OPTIONS.items()
    ]
    out = tmp_path / "out"
    assert (
        cli_main(["-q", "run", str(sample_dir), "--out", str(out), "--weights", str(planted_file), *flags])
        == 0
    )
    embedded = json.loads((out / "hierarchy.json").read_text())

    assert_same_document(suite["clusters"], embedded["clusters"], "clusters")
    target = suite["models"]["target"]
    assert target["source"] == "upload" and target["model_id"] == registered["id"]
    assert target["sha256"] == registered["sha256"] == embedded["models"]["target"]["sha256"]
    assert target["preprocessing"] == embedded["models"]["target"]["preprocessing"]
    assert embedded["models"]["target"]["source"] == "file"

    # Ground truth: every level-1 cluster of one background's concept holds its detectors.
    names = {image["id"]: image["file_name"] for image in suite["images"]}
    checked = 0
    for cluster in (c for c in suite["clusters"] if c["level"] == 1):
        shapes = {names[i].split("-")[0] for i in cluster["images"]}
        if len(shapes) == 1 and (shape := shapes.pop()) in CONCEPT_BACKGROUNDS:
            group = {n["channel"] for n in cluster["neurons"] if n["layer"] == "conv1"}
            assert planted_colour_detectors(CONCEPT_BACKGROUNDS[shape]) <= group, (shape, group)
            checked += 1
    assert checked >= 3


def test_a_timm_model_works_end_to_end(api: httpx.Client, sample_dir: Path, tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "test_convnext.safetensors"
    save_file(timm.create_model("test_convnext", pretrained=False, num_classes=6).state_dict(), str(path))
    response = upload(api, path, "timm:test_convnext")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["architecture"] == "timm:test_convnext" and model["num_classes"] == 6
    layers = api.get(f"/v1/models/{model['id']}/layers").json()["layers"]
    defaults = [layer["name"] for layer in layers if layer["default"]]
    assert defaults and all(name.startswith("stages.") for name in defaults)
    options = {k: v for k, v in OPTIONS.items() if k != "layers"} | {"model_id": model["id"]}
    response = api.post(
        "/v1/jobs",
        files=[("files", ("images.zip", zip_folder(sample_dir), "application/zip"))],
        data={"spec": json.dumps({"options": options})},
    )
    assert response.status_code == 202, response.text
    job = wait_for(api, response.headers["location"], {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job["error"]
    hierarchy = api.get(f"/v1/jobs/{job['id']}/hierarchy").json()
    assert hierarchy["models"]["target"]["architecture"] == "timm:test_convnext"
    assert {layer["name"] for layer in hierarchy["layers"]} == set(defaults)


def test_another_tenants_model_is_not_found_on_every_route(suite: Any, registered: dict[str, Any]) -> None:
    model_id = registered["id"]
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as other:
        assert other.get(f"/v1/models/{model_id}").status_code == 404
        assert other.get(f"/v1/models/{model_id}/layers").status_code == 404
        assert other.delete(f"/v1/models/{model_id}").status_code == 404
        assert model_id not in [m["id"] for m in other.get("/v1/models").json()["items"]]
        job = other.post(
            "/v1/jobs",
            files=[("files", ("a.png", b"not read", "image/png"))],
            data={"spec": json.dumps({"options": {"model_id": model_id}})},
        )
        assert job.status_code == 422 and job.headers["content-type"] == "application/problem+json"
        assert "names none of your models" in job.json()["title"]
    with httpx.Client(base_url=suite.url, timeout=60) as anonymous:
        assert anonymous.get(f"/v1/models/{model_id}").status_code == 401
        assert anonymous.get("/v1/models").status_code == 401


def test_a_path_in_options_weights_is_refused_and_no_job_is_made(api: httpx.Client) -> None:
    before = api.get("/v1/jobs", params={"page_size": 100}).json()["jobs"]
    response = api.post(
        "/v1/jobs",
        files=[("files", ("a.png", b"not read", "image/png"))],
        data={"spec": json.dumps({"options": {"weights": "/etc/passwd"}})},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "model_id" in response.json()["fix"]
    assert api.get("/v1/jobs", params={"page_size": 100}).json()["jobs"] == before


def _refused(api: httpx.Client, suite: Any, s3_server: Any, path: Path, architecture: str) -> dict[str, Any]:
    before_keys = stored_model_keys(suite, s3_server, "tenant-a")
    before = api.get("/v1/models", params={"page_size": 100}).json()
    response = upload(api, path, architecture)
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert stored_model_keys(suite, s3_server, "tenant-a") == before_keys  # nothing left behind
    assert api.get("/v1/models", params={"page_size": 100}).json() == before
    return {"status": response.status_code, **response.json()}


def test_bad_uploads_get_the_right_4xx_and_leave_nothing(
    api: httpx.Client, suite: Any, s3_server: Any, planted_file: Path, tmp_path: Path
) -> None:
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(b"\x80\x04" + pickle.dumps({"fc.weight": [1.0]}))
    problem = _refused(api, suite, s3_server, pickled, "resnet18")
    assert problem["status"] == 415 and "safetensors" in problem["fix"]

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(planted_file.read_bytes()[:5_000_000])
    problem = _refused(api, suite, s3_server, truncated, "resnet18")
    assert problem["status"] == 422 and "truncated" in problem["fix"]

    problem = _refused(api, suite, s3_server, planted_file, "resnet34")  # another architecture
    assert problem["status"] == 422 and problem["type"].endswith("weights-mismatch")
    assert "layer1.2.conv1.weight" in problem["missing_keys"]

    problem = _refused(api, suite, s3_server, planted_file, "resnet19")
    assert problem["status"] == 422 and "resnet18" in problem["fix"]  # the close matches

    oversized = tmp_path / "oversized.safetensors"
    with oversized.open("wb") as f:
        f.truncate(51 * 1024 * 1024)  # over the suite's GATEWAY_MAX_MODEL_BYTES (50 MiB)
    problem = _refused(api, suite, s3_server, oversized, "resnet18")
    assert problem["status"] == 413


def test_import_from_the_tenants_bucket_area(
    api: httpx.Client, suite: Any, s3_server: Any, planted_file: Path
) -> None:
    s3_server.client().fput_object(
        suite.bucket, "imports/tenant-a/ckpt/v3/model.safetensors", str(planted_file)
    )
    response = api.post(
        "/v1/models", json={"architecture": "resnet18", "source": {"kind": "bucket", "uri": "ckpt/v3/"}}
    )
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == sha256(planted_file)
    assert response.json()["source"]["kind"] == "bucket"
    # Another tenant's area is out of reach: the prefix is always under the caller's own.
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=120) as other:
        refused = other.post(
            "/v1/models", json={"architecture": "resnet18", "source": {"kind": "bucket", "uri": "ckpt/v3/"}}
        )
    assert refused.status_code == 422 and "no .safetensors" in refused.json()["detail"]


def test_import_from_an_mlflow_model_uri(
    api: httpx.Client, mlflow_server: str, planted_file: Path, tmp_path: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    experiment = client.create_experiment(f"registry-{tmp_path.name}")
    run = client.create_run(experiment)
    client.log_artifact(run.info.run_id, str(planted_file), artifact_path="weights")
    client.set_terminated(run.info.run_id)
    name = f"planted-{tmp_path.name}".replace("_", "-")
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run.info.run_id}/weights", run_id=run.info.run_id)

    response = api.post(
        "/v1/models",
        json={"architecture": "resnet18", "source": {"kind": "mlflow", "uri": f"models:/{name}/1"}},
    )
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == sha256(planted_file)
    assert response.json()["source"]["uri"] == f"models:/{name}/1"

    missing = api.post(
        "/v1/models",
        json={"architecture": "resnet18", "source": {"kind": "mlflow", "uri": f"models:/{name}/9"}},
    )
    assert missing.status_code == 422 and "MLflow" in missing.json()["detail"]


def test_a_hub_import_without_hub_access_says_so(api: httpx.Client) -> None:
    response = api.post(
        "/v1/models",
        json={"architecture": "timm:resnet18", "source": {"kind": "hub", "uri": "timm/resnet18.a1_in1k"}},
    )
    assert response.status_code == 422
    assert "hub cannot be reached" in response.json()["detail"]


def test_delete_removes_the_model_and_its_objects(
    api: httpx.Client, suite: Any, s3_server: Any, planted_file: Path
) -> None:
    model = upload(api, planted_file, "resnet18").json()
    assert any(model["id"] in key for key in stored_model_keys(suite, s3_server, "tenant-a"))
    assert api.delete(f"/v1/models/{model['id']}").status_code == 204
    assert api.get(f"/v1/models/{model['id']}").status_code == 404
    assert not any(model["id"] in key for key in stored_model_keys(suite, s3_server, "tenant-a"))
