"""Helpers for tests that talk to the suite over HTTP."""

from __future__ import annotations

import time
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
