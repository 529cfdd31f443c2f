"""The gateway's memory stays bounded under hostile uploads, with its default limits.

Measured as the gateway process's peak resident memory (VmHWM) before and after each bomb; the
README states the bound these numbers show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.test_api import LIGHT
from tests.services.gateway.test_uploads import zeros_zip

DEFAULT_LIMITS = ("GATEWAY_MAX_REQUEST_BYTES", "GATEWAY_MAX_EXPANDED_BYTES", "GATEWAY_MAX_ARCHIVE_ENTRIES")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_bombs_leave_the_gateways_peak_memory_bounded(suite: Any, tmp_path: Path, capsys: Any) -> None:
    from tests.servers import ProcessGroup, start_gateway

    env = {k: v for k, v in suite.env.items() if k not in DEFAULT_LIMITS}  # the shipped defaults
    group = ProcessGroup(tmp_path)
    try:
        url = start_gateway(group, env)
        pid = group.processes["gateway"].pid
        with httpx.Client(base_url=url, headers=suite.headers(), timeout=120) as client:
            client.get("/v1/jobs")  # warm: first requests import and allocate
            baseline = peak_rss_mb(pid)
            bomb = zeros_zip("zeros.png", 2**30)  # 1 GiB of zeros in about 1 MB
            answer = client.post(
                "/v1/jobs",
                files=[("files", ("bomb.zip", bomb, "application/zip"))],
                data={"spec": json.dumps(LIGHT)},
            )
            assert answer.status_code == 422, answer.text  # its only entry skipped: no usable image
            after_zip = peak_rss_mb(pid)

            def huge_json() -> Any:
                yield b'{"options": {}, "pad": "'
                for _ in range(300):
                    yield b"x" * 2**20
                yield b'"}'

            answer = client.post(
                "/v1/jobs", content=huge_json(), headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 413, answer.text
            after_json = peak_rss_mb(pid)
        with capsys.disabled():
            print(
                f"\ngateway peak RSS: {baseline:.0f} MB idle, {after_zip:.0f} MB after a "
                f"{len(bomb) / 1e6:.1f} MB zip of 1 GiB of zeros, {after_json:.0f} MB after a 300 MiB JSON "
                "body"
            )
        assert after_zip - baseline < 100 and after_json - baseline < 100
    finally:
        group.stop()
