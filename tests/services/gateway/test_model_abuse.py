"""The model registry and job submission under attack (issue 26): the reproductions of one
tenant reading another's files or the workers' disks, and of one request stalling the gateway or
a worker for everyone. Each ran against the suite as found and did what its name says it must
not; each now gets a 4xx that names no path, host or address."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.services.gateway.helpers import LIGHT_OPTIONS
from tests.services.gateway.test_memory_bounds import peak_rss_mb
from tests.services.gateway.test_models import planted_file as planted_file
from tests.services.gateway.test_models import stored_model_keys, upload

LEAKS = ("/tmp", "/root", "neuron-atlas-model", "127.0.0.1", "HTTPConnectionPool", "Traceback")


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh (root may write 5 to clear_refs), so a peak is this test's own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def safetensors_bytes(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def assert_problem(response: httpx.Response, status: int, kind: str = "", sent: str = "") -> dict[str, Any]:
    """A problem+json answer that names no path, host or address but what the caller `sent`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = dict(response.json())
    assert body["type"].endswith(kind), body
    text = json.dumps(body).replace(json.dumps(sent)[1:-1], "") if sent else json.dumps(body)
    assert not any(leak in text for leak in LEAKS), text
    return body


@pytest.fixture(scope="module")
def acme(suite: Any) -> Any:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=180) as client:
        yield client


@pytest.fixture(scope="module")
def evil(suite: Any) -> Any:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=180) as client:
        yield client


# --- 1. No tenant reads a worker's disk through an MLflow import -------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "file:///tmp/neuron-atlas-models/",  # the workers' cache of every tenant's weights
        "file:///root/",
        "/etc",
        "s3://suite-test/models/tenant-a/",
        "runs:/0123abc/../../../../tmp",
        "models:/../x",
    ],
)
def test_an_mlflow_import_takes_only_registry_names(
    evil: httpx.Client, suite: Any, s3_server: Any, uri: str
) -> None:
    before = stored_model_keys(suite, s3_server, "tenant-b")
    answer = evil.post(
        "/v1/models", json={"architecture": "resnet18", "source": {"kind": "mlflow", "uri": uri}}
    )
    body = assert_problem(answer, 422, sent=uri)
    assert "models:/" in json.dumps(body)  # says what it takes
    assert stored_model_keys(suite, s3_server, "tenant-b") == before


def test_a_hub_import_of_a_repository_the_operator_did_not_allow_is_refused(evil: httpx.Client) -> None:
    answer = evil.post(
        "/v1/models",
        json={"architecture": "timm:resnet18", "source": {"kind": "hub", "uri": "someone/any-repository"}},
    )
    body = assert_problem(answer, 422, "model-not-allowed")
    assert "ALLOWED_HUB_MODELS" in body["fix"]


# --- 2. No job names a path or an arbitrary hub repository for a worker to open ----------------


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("caption_model", "/etc"),
        ("caption_model", "../../root"),
        ("caption_model", "someone/any-blip"),
        ("embed_model", "/tmp"),
        ("embed_model", "~/.cache"),
    ],
)
def test_a_job_may_name_only_models_the_operator_allows(
    evil: httpx.Client, sample_dir: Path, field: str, name: str
) -> None:
    before = evil.get("/v1/jobs", params={"page_size": 100}).json()["jobs"]
    png = sorted(sample_dir.glob("*.png"))[0]
    answer = evil.post(
        "/v1/jobs",
        files=[("files", (png.name, png.read_bytes(), "image/png"))],
        data={"spec": json.dumps({"options": {**LIGHT_OPTIONS, field: name}})},
    )
    body = assert_problem(answer, 422, "model-not-allowed", sent=name)
    assert f"options.{field}" in body["detail"] and "ALLOWED_HUB_MODELS" in body["fix"]
    assert evil.get("/v1/jobs", params={"page_size": 100}).json()["jobs"] == before


# --- 3. A huge safetensors header stalls no one ------------------------------------------------


def empty_tensors_header(count: int) -> bytes:
    entry = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    return json.dumps({f"t{i}": entry for i in range(count)}, separators=(",", ":")).encode()


@pytest.mark.slow
def test_a_huge_header_neither_stalls_the_gateway_nor_grows_it(suite: Any, tmp_path: Path) -> None:
    """The issue's file: a 100 MB header of 1.87 million empty tensors, with the gateway's
    shipped upload limit (1 GiB). It took the gateway from 96 MB to 1.26 GB and stalled
    /healthz for 10 to 14 s for every tenant."""
    from tests.servers import ProcessGroup, start_gateway

    env = {k: v for k, v in suite.env.items() if k != "GATEWAY_MAX_MODEL_BYTES"}
    files = {
        "over-the-cap": safetensors_bytes(empty_tensors_header(1_870_000)),  # ~100 MB
        "at-the-cap": safetensors_bytes(empty_tensors_header(70_000)),  # ~4 MB, parsed
        "nested": safetensors_bytes(b"[" * 100_000 + b"]" * 100_000),
    }
    group = ProcessGroup(tmp_path)
    try:
        url = start_gateway(group, env)
        pid = group.processes["gateway"].pid
        with (
            httpx.Client(base_url=url, headers=suite.headers("tenant-b"), timeout=120) as evil,
            httpx.Client(base_url=url, timeout=30) as other,
        ):
            evil.get("/v1/models")  # warm: first requests import and allocate
            reset_peak(pid)
            latencies: list[float] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    assert other.get("/healthz").status_code == 200
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.02)

            poller = threading.Thread(target=poll)
            poller.start()
            try:
                for name, data in files.items():
                    path = tmp_path / f"{name}.safetensors"
                    path.write_bytes(data)
                    body = assert_problem(upload(evil, path, "resnet18"), 422)
                    assert body["type"].endswith(("invalid-weights", "weights-mismatch")), body
            finally:
                stop.set()
                poller.join()
            peak = peak_rss_mb(pid)
    finally:
        group.stop()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    worst = max(latencies) * 1000
    print(f"gateway peak {peak:.0f} MB; /healthz p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms")
    assert peak < 200, peak  # the bound
    assert len(latencies) > 10
    # /healthz answered throughout; the bound is loose for a loaded 2-core CI machine (the
    # stall was 10 to 14 s), the measured value is in docs/own-model.md
    assert max(latencies) < 1.0, max(latencies)


# --- 4. A tiny file declared as a huge model takes no worker's memory ---------------------------


def test_a_tiny_file_declared_as_a_huge_model_is_refused_before_it_is_built(
    evil: httpx.Client, suite: Any, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file({"weight": np.zeros(3, dtype=np.float32)}, str(path))
    assert path.stat().st_size < 200
    # every live activation worker (the fault tests replace the first), whichever takes the check
    workers = [
        process.pid
        for name, process in suite.processes.processes.items()
        if name.startswith("activation") and process.poll() is None
    ]
    for pid in workers:
        reset_peak(pid)
    before = {pid: peak_rss_mb(pid) for pid in workers}
    body = assert_problem(upload(evil, path, "timm:vit_huge_patch14_224"), 422)
    assert body["type"].endswith(("model-too-large", "weights-mismatch")), body
    grew = max(peak_rss_mb(pid) - before[pid] for pid in workers)
    print(f"activation worker grew by {grew:.0f} MB")
    assert grew < 300, grew  # building the model grew it by 2.2 GB


# --- 5, 6. Malformed input gets a 422 (not a 500 retried five times, nor a false 503) -----------


def test_a_deeply_nested_header_is_refused_by_upload_and_by_import(
    evil: httpx.Client, suite: Any, s3_server: Any, tmp_path: Path
) -> None:
    nested = tmp_path / "model.safetensors"
    nested.write_bytes(safetensors_bytes(b"[" * 100_000 + b"]" * 100_000))
    assert_problem(upload(evil, nested, "resnet18"), 422, "invalid-weights")
    s3_server.client().fput_object(suite.bucket, "imports/tenant-b/nested/model.safetensors", str(nested))
    started = time.perf_counter()
    answer = evil.post(
        "/v1/models", json={"architecture": "resnet18", "source": {"kind": "bucket", "uri": "nested/"}}
    )
    body = assert_problem(answer, 422)
    assert "did not finish" not in json.dumps(body) and time.perf_counter() - started < 60


# --- 8. Options a registered model decides are checked at submission ---------------------------


@pytest.fixture(scope="module")
def acme_model(acme: httpx.Client, planted_file: Path) -> dict[str, Any]:
    answer = upload(acme, planted_file, "resnet18")
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_model_id_with_another_head_size_or_unknown_layers_is_refused_at_submission(
    acme: httpx.Client, acme_model: dict[str, Any], sample_dir: Path
) -> None:
    png = sorted(sample_dir.glob("*.png"))[0]

    def submit(options: dict[str, Any]) -> httpx.Response:
        light = {k: v for k, v in LIGHT_OPTIONS.items() if k not in ("allow_random_weights", "layers")}
        spec = {"options": {**light, "model_id": acme_model["id"], **options}}
        return acme.post(
            "/v1/jobs",
            files=[("files", (png.name, png.read_bytes(), "image/png"))],
            data={"spec": json.dumps(spec)},
        )

    body = assert_problem(submit({"num_classes": 5}), 422, "invalid-spec")
    assert f"head of {acme_model['num_classes']} outputs" in body["title"]
    body = assert_problem(submit({"layers": ["stages.3"]}), 422, "invalid-spec")
    assert "'stages.3'" in body["title"] and "/layers" in body["fix"]
    body = assert_problem(submit({"layers": ["layer4", "layr1"]}), 422, "invalid-spec")
    assert "'layr1'" in body["title"] and "'layer4'" not in body["title"]
    assert "did you mean layer1" in body["detail"]


# --- 9. Quantised or wide weights are not cast in silence --------------------------------------


def test_integer_weights_are_refused_and_float64_weights_are_cast_with_a_warning(
    evil: httpx.Client, planted_file: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    state = load_file(str(planted_file))
    quantised = tmp_path / "int8.safetensors"
    save_torch(
        {k: (v * 10).to("cpu").char() if v.is_floating_point() else v for k, v in state.items()},
        str(quantised),
    )
    body = assert_problem(upload(evil, quantised, "resnet18"), 422, "quantised-weights")
    assert "I8" in body["detail"]

    wide = tmp_path / "float64.safetensors"  # the head in float64: the whole file would pass the limit
    save_torch({k: v.double() if k.startswith("fc.") else v for k, v in state.items()}, str(wide))
    answer = upload(evil, wide, "resnet18")
    assert answer.status_code == 201, answer.text
    assert any("float64" in w for w in answer.json()["warnings"])
    assert evil.delete(f"/v1/models/{answer.json()['id']}").status_code == 204


# --- 10, 11. The models list and the upload limit answer like the rest of the API --------------


def test_a_forged_models_page_token_is_a_422(evil: httpx.Client) -> None:
    assert_problem(evil.get("/v1/models", params={"page_token": "garbage"}), 422)


def test_an_oversized_model_is_told_the_models_fix(evil: httpx.Client, tmp_path: Path) -> None:
    oversized = tmp_path / "oversized.safetensors"
    with oversized.open("wb") as f:
        f.truncate(51 * 1024 * 1024)  # over the suite's GATEWAY_MAX_MODEL_BYTES (50 MiB)
    body = assert_problem(upload(evil, oversized, "resnet18"), 413)
    assert "GATEWAY_MAX_MODEL_BYTES" in body["fix"] and "images" not in body["fix"]
