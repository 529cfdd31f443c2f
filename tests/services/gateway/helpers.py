"""Helpers for tests that talk to the suite over HTTP."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx

from tests.servers import zip_folder as zip_folder


def wait_for(client: httpx.Client, job_url: str, statuses: set[str], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(job_url).raise_for_status().json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job stayed {job.get('status')} ({job}) for {timeout}s")


def assert_same_document(ours: Any, theirs: Any, where: str = "$") -> None:
    """Equal, except that floats may differ in the last printed digit: a worker with one torch
    thread sums in another order than a process with two, and the statistics' sixth decimal can
    round the other way (seen in a keep-only interval from two random sets: 0.413646 / 0.413644).
    Everything else (ids, neurons, labels, decisions, counts) must be identical."""
    if isinstance(ours, float) or isinstance(theirs, float):
        assert isinstance(ours, int | float) and isinstance(theirs, int | float), where
        assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-5), f"{where}: {ours} != {theirs}"
    elif isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys(), f"{where}: keys differ"
        for key in ours:
            assert_same_document(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_document(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


# Light options: a job on a few sample images finishes in seconds on a CPU.
LIGHT_OPTIONS = {
    "allow_random_weights": True,
    "device": "cpu",
    "layers": ["layer4"],
    "bootstrap_resamples": 20,
    "mc_samples": 0,
    "tta_samples": 0,
    "ablation_random_sets": 0,
    "pruning_random_sets": 0,
}


def finished_job(client: httpx.Client, sample_dir: Path, count: int = 6) -> dict[str, Any]:
    """A job of the client's tenant on `count` sample images (captions brought), succeeded."""
    paths = sorted(sample_dir.glob("*.png"))[:count]
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    files.append(("files", ("metadata.csv", (sample_dir / "metadata.csv").read_bytes(), "text/csv")))
    answer = client.post("/v1/jobs", files=files, data={"spec": json.dumps({"options": LIGHT_OPTIONS})})
    assert answer.status_code == 202, answer.text
    job = wait_for(client, answer.headers["location"], {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job["error"]
    return job
