"""Fixtures shared by every test: no hub access, generated sample images, tiny models."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers import (
    ProcessGroup,
    RedisServer,
    S3Server,
    free_port,
    start_redis,
    start_seaweedfs,
    start_suite,
    wait_http,
)

if TYPE_CHECKING:
    from benchmarks.factor_world import FactorModel
    from tests.comparison_runs import PlantedRuns

# Tests never reach for a model hub: every model they use is built here or shipped by a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's generated collection: 6 concepts x 4 images, captions in metadata.csv."""
    from neuron_atlas.sample import make_sample

    return make_sample(tmp_path_factory.mktemp("sample") / "images", per_concept=4, size=96)


@pytest.fixture(scope="session")
def embedded_result(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample, run once through the embedded pipeline with light uncertainty settings."""
    from neuron_atlas.pipeline import run
    from neuron_atlas_client.options import PipelineOptions

    out = tmp_path_factory.mktemp("embedded") / "out"
    options = PipelineOptions(
        allow_random_weights=True,
        layers=("layer3", "layer4"),
        bootstrap_resamples=20,
        mc_samples=0,
        tta_samples=0,
        ablation_random_sets=0,
    )
    run(sample_dir, out, options)
    return out


@pytest.fixture(scope="session")
def factor_model(tmp_path_factory: pytest.TempPathFactory) -> FactorModel:
    """A resnet18 trained from random init on factor-world images (benchmarks/factor_world.py),
    once per session: 2.5 min on a busy 2-core machine, about 1.5 min on an idle one.
    NEURON_ATLAS_FACTOR_MODEL_DIR names a folder that keeps it between sessions (reused while
    the config and the generator's code match)."""
    from benchmarks.factor_world import trained_factor_model

    kept = os.environ.get("NEURON_ATLAS_FACTOR_MODEL_DIR")
    return trained_factor_model(Path(kept) if kept else tmp_path_factory.mktemp("factor-model"))


@pytest.fixture(scope="session")
def planted_runs(tmp_path_factory: pytest.TempPathFactory) -> PlantedRuns:
    """The sample run with the planted ResNet18 and with copies changed in one known place
    (tests/comparison_runs.py), for the comparison's tests: four embedded runs, about 2 min."""
    from tests.comparison_runs import make_planted_runs

    return make_planted_runs(tmp_path_factory.mktemp("planted-runs"))


@pytest.fixture
def demo_like_hierarchy(embedded_result: Path) -> dict[str, Any]:
    """A fresh copy of that run's hierarchy.json, for tests that change it."""
    return json.loads((embedded_result / "hierarchy.json").read_text())


# --- The service suite on 127.0.0.1: real redis-server, SeaweedFS S3, Celery workers, uvicorn ---

S3_ACCESS_KEY, S3_SECRET_KEY = "suite-test-key", "suite-test-secret-123"
TENANT_KEYS = {
    "tenant-a": "key-for-tenant-a",
    "tenant-b": "key-for-tenant-b",
    "tenant-quota": "key-for-tenant-quota",  # small quotas of its own (GATEWAY_TENANT_QUOTAS)
    "tenant-spend": "key-for-tenant-spend",  # an LLM spend window of 1 token (GATEWAY_TENANT_QUOTAS)
    "tenant-fuzz": "key-for-tenant-fuzz",  # schemathesis' own: its stateful phase deletes what it finds
}
# Small enough that a test reaches each; the other tenants keep the defaults.
TENANT_QUOTAS = {
    "tenant-quota": {"max_concurrent_jobs": 1, "max_images_per_job": 3, "max_llm_tokens_per_job": 40},
    "tenant-spend": {"max_llm_tokens_per_window": 1},
}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:  # fail, not skip: the suite's tests must not vanish
        pytest.fail("The service tests need redis-server: apt-get install redis-server")
    # Append-only, as docs/deployment.md asks of a deployment's Redis (the fault tests restart it).
    server = start_redis(tmp_path_factory.mktemp("redis"), appendonly=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), S3_ACCESS_KEY, S3_SECRET_KEY)
    yield server
    server.stop()


@dataclass
class Suite:
    url: str
    env: dict[str, str]
    bucket: str
    logs: Path
    keys: dict[str, str] = field(default_factory=lambda: dict(TENANT_KEYS))
    metrics: dict[str, str] = field(default_factory=dict)  # worker service -> its /metrics URL
    processes: ProcessGroup | None = None  # for fault tests that kill and replace a worker

    def headers(self, tenant: str = "tenant-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


@pytest.fixture(scope="session")
def suite_llm() -> Iterator[Any]:
    """An OpenAI-compatible endpoint for the suite's labelling worker, off by default (so suite
    jobs label offline, like the embedded run); a relabel with offline=false turns it on."""
    from tests.services.labelling.fake_llm import FakeLLM

    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def suite(
    redis_server: RedisServer,
    s3_server: S3Server,
    suite_llm: Any,
    mlflow_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Suite]:
    """The whole suite, started once: the gateway under uvicorn and one Celery worker per
    service, each a subprocess listening on its own queue."""
    logs = tmp_path_factory.mktemp("suite-logs")
    bucket = "suite-test"
    s3_server.make_bucket(bucket)
    env = {
        **os.environ,
        # The checkout's client package too: an installed (editable) one may be another checkout's.
        "PYTHONPATH": os.pathsep.join(
            str(Path(__file__).resolve().parents[1] / part) for part in ("", "client/src")
        ),
        "ENVIRONMENT": "development",
        "REDIS_URL": redis_server.url,
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_PUBLIC_ENDPOINT": s3_server.endpoint,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY": S3_ACCESS_KEY,
        "S3_SECRET_KEY": S3_SECRET_KEY,
        "GATEWAY_API_KEYS": json.dumps(
            {hashlib.sha256(k.encode()).hexdigest(): t for t, k in TENANT_KEYS.items()}
        ),
        "GATEWAY_TENANT_QUOTAS": json.dumps(TENANT_QUOTAS),
        "GATEWAY_QUOTA_RETRY_AFTER_S": "7",
        "GATEWAY_MAX_REQUEST_BYTES": str(4 * 1024 * 1024),
        "GATEWAY_MAX_IMAGES_PER_JOB": "40",
        "GATEWAY_MAX_ARCHIVE_ENTRIES": "50",
        "GATEWAY_MAX_EXPANDED_BYTES": str(8 * 1024 * 1024),
        "OMP_NUM_THREADS": "1",
        # A task silent this long is sent again (shared.jobs.reconciler); the default is minutes.
        "TASK_STALL_S": "8",
        # Webhooks: retries that a test can wait for (the defaults back off for up to an hour).
        "WEBHOOK_SIGNING_KEY": "suite-webhook-signing-key",
        "WEBHOOK_RETRY_DELAYS_S": "[0.5, 1.0]",
        "WEBHOOK_MAX_AGE_S": "60",
        "WEBHOOK_TIMEOUT_S": "5",
        "NEURON_ATLAS_LLM__BASE_URL": suite_llm.url,
        "NEURON_ATLAS_LLM__MODEL": "fake-model",
        "NEURON_ATLAS_LLM__OFFLINE": "true",
        # An endpoint that is down is waited out this long (5 + 10 s of pauses), then fails the job.
        "NEURON_ATLAS_LLM__OUTAGE_WINDOW_S": "25",
        "NEURON_ATLAS_LLM__CACHE_DIR": str(logs / "unused-local-cache"),
        "MLFLOW_TRACKING_URI": mlflow_server,  # model imports (tests/services/gateway/test_models.py)
        "GATEWAY_MAX_MODEL_BYTES": str(50 * 1024 * 1024),  # a 6-class ResNet18 is 45 MB
        "GATEWAY_MODEL_CHECK_TIMEOUT_S": "120",
        # Hub ids a job or an import may name: the defaults, a timm repository (an import that
        # the offline suite answers "hub cannot be reached"), and an embedder that does not
        # exist (a stage that fails in a worker, tests/services/gateway/test_api.py).
        "ALLOWED_HUB_MODELS": json.dumps(
            [
                "Salesforce/blip-image-captioning-base",
                "sentence-transformers/all-MiniLM-L6-v2",
                "timm/resnet18.a1_in1k",
                "no-such-embedder",
            ]
        ),
    }
    group = ProcessGroup(logs)
    try:
        metrics: dict[str, str] = {}
        url = start_suite(group, env, metrics)
        yield Suite(url, env, bucket, logs, metrics=metrics, processes=group)
    finally:
        group.stop()
        time.sleep(0.1)
        if os.environ.get("SUITE_LOGS"):
            subprocess.run(["tail", "-n", "40", *map(str, sorted(logs.glob("*.log")))], check=False)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` with a file store (MLflow 3 keeps it behind MLFLOW_ALLOW_FILE_STORE)."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()  # bound at once: the suite, which starts after it, is told the URL
    log = (folder / "mlflow.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            (folder / "mlruns").as_uri(),
            "--artifacts-destination",
            (folder / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # mlflow starts uvicorn as a child: stop the whole group
    )
    group = ProcessGroup(folder)
    group.processes["mlflow"] = process
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", group, timeout=90)
        yield url
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
