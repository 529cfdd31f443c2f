"""Helpers for tests that talk to the suite over HTTP."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def wait_for(client: httpx.Client, job_url: str, statuses: set[str], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(job_url).raise_for_status().json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job stayed {job.get('status')} ({job}) for {timeout}s")
