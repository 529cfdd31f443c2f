"""One finished job for every integration test (client, remote CLI, webhooks, metrics, logs,
MLflow), submitted through the Python client to the session's suite: a job costs tens of
seconds of CPU, so the tests share it rather than each making its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas_client import Client, JobPublic
from tests.integrations.receiver import Receiver, start_receiver

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
