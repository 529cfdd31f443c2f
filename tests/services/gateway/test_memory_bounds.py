"""The gateway's memory stays bounded under hostile uploads, with its default limits.

Measured as the gateway process's peak resident memory (VmHWM) before and after each bomb; the
docs/api.md states the bound these numbers show."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.helpers import wait_for
from tests.services.gateway.test_api import LIGHT
from tests.services.gateway.test_uploads import zeros_zip

# An image worker's peak resident memory, as docs/api.md states it (torch, the models and a shard).
WORKER_PEAK_MB = 2000

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


def large_pngs(count: int, side: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """`count` different PNGs of side x side pixels, a few KB each: one colour each (a palette
    image compresses to almost nothing, and decodes to side² x 3 bytes of RGB)."""
    from PIL import Image

    image = Image.new("P", (side, side), 0)
    files = []
    for index in range(count):
        image.putpalette([25 * index, 100, 255 - 25 * index])
        buffer = io.BytesIO()
        image.save(buffer, "PNG", compress_level=9)
        files.append(("files", (f"large-{index}.png", buffer.getvalue(), "image/png")))
    return files


def worker_pid(suite: Any, service: str) -> int:
    """The pid of the suite's worker of `service` (a replacement, if a fault test started one);
    with `--pool solo` the worker process runs the tasks itself."""
    assert suite.processes is not None
    running = [
        p for name, p in suite.processes.processes.items() if name.startswith(service) and p.poll() is None
    ]
    assert len(running) == 1, running
    return int(running[0].pid)


@pytest.mark.slow
def test_a_shard_of_large_pngs_leaves_the_image_workers_peak_memory_bounded(suite: Any, capsys: Any) -> None:
    """Ten 7000 x 7000 PNGs (49 megapixels each, under the 50-megapixel limit) in one shard.
    Each is reduced right after decoding, so a worker never holds more than a few decoded at
    full size at once (one per decoding thread)."""
    files = large_pngs(10, 7000)
    spec = {
        "options": {**LIGHT["options"], "shard_size": 16},
        "captions": {f"large-{i}.png": f"a flat colour number {i}" for i in range(10)},
    }
    pids = {service: worker_pid(suite, service) for service in ("caption", "activation")}
    before = {service: peak_rss_mb(pid) for service, pid in pids.items()}
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=120) as client:
        job = client.post("/v1/jobs", files=files, data={"spec": json.dumps(spec)})
        assert job.status_code == 202, job.text
        done = wait_for(client, f"/v1/jobs/{job.json()['id']}", {"succeeded", "failed"}, timeout=300)
    after = {service: peak_rss_mb(pid) for service, pid in pids.items()}
    with capsys.disabled():
        print(
            "\nimage workers' peak RSS, before and after a shard of ten 7000 x 7000 PNGs: "
            + ", ".join(f"{s} {before[s]:.0f} -> {after[s]:.0f} MB" for s in pids)
        )
    assert done["status"] == "succeeded", done
    assert after["activation"] < WORKER_PEAK_MB and after["caption"] < WORKER_PEAK_MB
    # Every caption was provided, so the caption worker decoded nothing: two 49-megapixel PNGs
    # in flight would have added some 300 MB (it went from 0.55 to 1.1 GB before it stopped).
    assert after["caption"] - before["caption"] < 50
