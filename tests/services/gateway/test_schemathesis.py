"""Schemathesis against the running suite (gateway under uvicorn, real workers, Redis, S3):
every check, in every phase (examples, coverage, fuzzing, and the stateful phase, which follows
the document's OpenAPI links from a submission or a job list to the operations on that job).
It must find nothing.

Bounded for CI (`--max-examples`, about a minute on 2 shared cores); run it longer by hand:

    SCHEMATHESIS_MAX_EXAMPLES=200 pytest tests/services/gateway/test_schemathesis.py

A failure prints schemathesis' report, with a curl line per case and the seed
(`SCHEMATHESIS_SEED=... ` runs the same cases again).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.services.gateway.helpers import finished_job

CONFIG = Path(__file__).with_name("schemathesis.toml")
TENANT = "tenant-fuzz"  # its own tenant: the stateful phase cancels, relabels and deletes jobs


def schemathesis_command() -> list[str]:
    found = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    if not Path(found).exists():
        pytest.fail("schemathesis is not installed: pip install -e .[test]")
    return [found]


@pytest.mark.slow
def test_schemathesis_finds_nothing(suite: Any, sample_dir: Path, tmp_path: Path) -> None:
    # A finished job, so the stateful phase finds one in GET /v1/jobs and follows its links to
    # the hierarchy, its clusters, neurons and thumbnails with real data.
    with httpx.Client(base_url=suite.url, headers=suite.headers(TENANT), timeout=60) as client:
        finished_job(client, sample_dir)
    command = [
        *schemathesis_command(),
        *("--config-file", str(CONFIG), "--no-color"),
        "run",
        f"{suite.url}/openapi.json",
        *("--checks", "all"),
        *("--phases", "examples,coverage,fuzzing,stateful"),
        *("--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50")),
        *("--workers", "1"),
        *("--header", f"Authorization: Bearer {suite.keys[TENANT]}"),
        *("--report", "junit", "--report-dir", str(tmp_path)),
    ]
    if seed := os.environ.get("SCHEMATHESIS_SEED"):
        command += ["--seed", seed]
    # Our own check (schemathesis_hooks.py): no answer names the suite's endpoints or folders.
    # (Not the S3 endpoint: in the suite it is also the public one that artifact links name.)
    host, port = _host_port(suite.env["REDIS_URL"])
    internals = [f"{host}:{port}", "HTTPConnectionPool", str(suite.logs.parent)]
    ran = tmp_path / "internals-checked"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        "SCHEMATHESIS_HOOKS": "tests.services.gateway.schemathesis_hooks",
        "NEURON_ATLAS_INTERNALS": json.dumps(internals),
        "NEURON_ATLAS_INTERNALS_CHECKED": str(ran),
    }
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, cwd=tmp_path, env=env)
    report = done.stdout[-20000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    phases = report.split("Test Phases:")[-1].split("Failures:" if "Failures:" in report else "Test cases:")[
        0
    ]
    assert "✅ Stateful" in phases, report  # the stateful phase ran, and passed
    assert ran.exists(), "the internals check never ran"


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port
