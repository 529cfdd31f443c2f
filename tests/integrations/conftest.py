"""One finished job for every integration test (client, remote CLI, webhooks, metrics, logs,
MLflow), submitted through the Python client to the session's suite: a job costs tens of
seconds of CPU, so the tests share it rather than each making its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas.client import Client, JobPublic
from tests.integrations.receiver import Receiver, start_receiver
from tests.servers import ProcessGroup, free_port, wait_http

LIGHT: dict[str, Any] = {
    "allow_random_weights": True,
    "device": "cpu",
    "layers": ["layer4"],
    "bootstrap_resamples": 20,
    "mc_samples": 0,
    "ablation_random_sets": 0,
    "pruning_random_sets": 0,
}


@pytest.fixture(scope="session")
def atlas(suite: Any) -> Iterator[Client]:
    with Client(suite.url, suite.keys["tenant-a"], timeout_s=60) as client:
        yield client


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    server = start_receiver()
    yield server
    server.stop()


@dataclass
class FinishedJob:
    job: JobPublic
    progress: list[JobPublic] = field(default_factory=list)  # what wait() reported, poll by poll
    sample: Path = Path()


@pytest.fixture(scope="session")
def finished_job(atlas: Client, sample_dir: Path, receiver: Receiver) -> FinishedJob:
    """The sample folder, submitted by the client (zipped and streamed), waited for; with
    webhooks to a receiver that fails once, one that is always down, and one for failures only."""
    seen: list[JobPublic] = []
    callbacks = [
        {"url": f"{receiver.url}/flaky"},
        {"url": f"{receiver.url}/down", "events": ["job.succeeded"]},
        {"url": f"{receiver.url}/failed-only", "events": ["job.failed"]},
    ]
    submitted = atlas.submit(sample_dir, LIGHT, callbacks=callbacks)
    done = atlas.wait(submitted.id, timeout_s=300, poll_interval_s=0.5, on_progress=seen.append)
    return FinishedJob(done, seen, sample_dir)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` with a file store (MLflow 3 keeps it behind MLFLOW_ALLOW_FILE_STORE)."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
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
