"""The Python client against the real suite (gateway, Redis, SeaweedFS, Celery workers)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from neuron_atlas_client import (
    ApiError,
    AsyncClient,
    Client,
    Cluster,
    ConfigError,
    Hierarchy,
    JobFailed,
    RetryPolicy,
    WaitTimeout,
)
from neuron_atlas_client._core import RetryNotice
from shared.storage.thumbnails import thumbnail_ids
from tests.integrations.conftest import LIGHT, FinishedJob
from tests.servers import zip_folder


class FlakyTransport(httpx.HTTPTransport):
    """The real gateway behind a network that loses answers: the first `failures` requests reach
    the gateway, and then their answer is replaced by `answer` (or the connection drops before
    sending when `answer` is None)."""

    def __init__(self, failures: int, answer: httpx.Response | None) -> None:
        super().__init__()
        self.failures, self.answer = failures, answer
        self.seen: list[httpx.Request] = []
        self.times: list[float] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        self.times.append(time.monotonic())
        if len(self.seen) <= self.failures:
            if self.answer is None:
                raise httpx.ConnectError("connection refused (injected)", request=request)
            super().handle_request(request).close()  # the gateway did the work; the answer is lost
            return self.answer
        return super().handle_request(request)


def test_submit_from_a_folder_waits_with_progress_and_reads_typed_results(
    atlas: Client, finished_job: FinishedJob
) -> None:
    job = finished_job.job
    assert job.status == "succeeded" and job.images == 24
    assert finished_job.progress, "wait() reported no progress"
    assert finished_job.progress[-1].status == "succeeded"
    assert any(p.status in ("queued", "running") for p in finished_job.progress)

    hierarchy = atlas.hierarchy(job.id)
    assert isinstance(hierarchy, Hierarchy) and len(hierarchy.images) == 24
    top = max(c.level for c in hierarchy.clusters)
    concepts = atlas.concepts(job.id, level=top)
    assert concepts and all(isinstance(c, Cluster) and c.level == top for c in concepts)
    one = atlas.concept(job.id, concepts[0].id)
    assert one == concepts[0]
    member = next(c for c in hierarchy.clusters if c.neurons)
    neuron = member.neurons[0]
    found = atlas.neuron(job.id, neuron.layer, neuron.channel)
    assert member.id in {c.id for c in found.clusters}


def test_artifacts_are_listed_and_downloaded_without_sending_the_key(
    atlas: Client, finished_job: FinishedJob, tmp_path: Path
) -> None:
    names = {a.name for a in atlas.artifacts(finished_job.job.id).artifacts}
    assert {"hierarchy.json", "spec.json", "manifest.json"} <= names
    written = atlas.download_artifacts(finished_job.job.id, tmp_path, ["hierarchy.json", "spec.json"])
    assert sorted(p.name for p in written) == ["hierarchy.json", "spec.json"]
    assert Hierarchy.model_validate_json(written[0].read_bytes()).clusters
    assert json.loads((tmp_path / "spec.json").read_text())["options"]["layers"] == ["layer4"]


def test_a_lost_answer_is_retried_after_retry_after_with_the_same_idempotency_key(
    suite: Any, sample_dir: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "four.zip"
    small = tmp_path / "four"
    small.mkdir()
    for path in sorted(sample_dir.glob("*.png"))[:4]:
        (small / path.name).write_bytes(path.read_bytes())
    archive.write_bytes(zip_folder(small))
    flaky = FlakyTransport(1, httpx.Response(429, headers={"Retry-After": "1"}))
    with Client(suite.url, suite.keys["tenant-a"], transport=flaky) as client:
        job = client.submit(archive, LIGHT)  # no captions: it fails fast, which is fine here
        keys = [r.headers["idempotency-key"] for r in flaky.seen]
        assert len(keys) == 2 and keys[0] == keys[1]
        assert flaky.times[1] - flaky.times[0] >= 1.0  # Retry-After honoured
        listed = [j.id for j in client.jobs(limit=10)]
        assert listed.count(job.id) == 1
        # The one job the two attempts made; cancelled so it costs the workers nothing more.
        try:
            client.cancel(job.id)
        except ApiError as exc:  # it may have finished (409) already
            assert exc.status == 409


def test_connection_errors_are_retried(suite: Any) -> None:
    flaky = FlakyTransport(2, None)
    policy = RetryPolicy(max_retries=3, backoff_base_s=0.05)
    with Client(suite.url, suite.keys["tenant-a"], transport=flaky, retry=policy) as client:
        assert list(client.jobs(limit=1))
    assert len(flaky.seen) == 3


def test_problems_become_api_errors_with_their_kind(suite: Any) -> None:
    with (
        Client(suite.url, "not-a-key", retry=RetryPolicy(max_retries=0)) as client,
        pytest.raises(ApiError) as refused,
    ):
        client.job("0" * 32)
    assert refused.value.status == 401 and refused.value.kind == "unauthorized"
    with Client(suite.url, suite.keys["tenant-b"]) as other, pytest.raises(ApiError) as missing:
        other.hierarchy("0" * 32)
    assert missing.value.status == 404 and "No job" in str(missing.value)


def test_options_are_checked_before_anything_is_sent(suite: Any, sample_dir: Path) -> None:
    with Client(suite.url, suite.keys["tenant-a"]) as client, pytest.raises(ValueError, match="top_fraction"):
        client.submit(sample_dir, {"top_fraction": 7})
    with pytest.raises(ConfigError):
        Client(None, "k")  # no URL and no NEURON_ATLAS_URL


def test_async_client_submits_a_bucket_prefix_and_wait_raises_when_cancelled(
    suite: Any, s3_server: Any, sample_dir: Path, tmp_path: Path
) -> None:
    small = tmp_path / "two"
    small.mkdir()
    for path in sorted(sample_dir.glob("*.png"))[:2]:
        (small / path.name).write_bytes(path.read_bytes())
    client = s3_server.client()
    with (sample_dir / "metadata.csv").open() as handle:
        captions = {row["file_name"]: row["caption"] for row in csv.DictReader(handle)}
    for path in sorted(sample_dir.glob("*.png"))[:6]:
        data = path.read_bytes()

        client.put_object(
            suite.bucket, f"imports/tenant-a/async-batch/{path.name}", io.BytesIO(data), len(data)
        )

    async def scenario() -> None:
        async with AsyncClient(suite.url, suite.keys["tenant-a"]) as atlas:
            job = await atlas.submit("imports/tenant-a/async-batch/", LIGHT, captions=captions)
            assert job.images == 6
            with pytest.raises(WaitTimeout):
                await atlas.wait(job.id, timeout_s=0.01, poll_interval_s=0.01)
            await atlas.cancel(job.id)
            with pytest.raises(JobFailed) as ended:
                await atlas.wait(job.id, timeout_s=120, poll_interval_s=0.3)
            assert ended.value.job.status == "cancelled"
            assert (await atlas.job(job.id)).status == "cancelled"
            # A folder, zipped and streamed by the async client too (no captions: it fails fast).
            uploaded = await atlas.submit(small, LIGHT)
            assert uploaded.images == 2
            with pytest.raises(JobFailed):
                await atlas.wait(uploaded.id, timeout_s=120, poll_interval_s=0.3)

    asyncio.run(scenario())


def test_models_through_the_client_sync_and_async(atlas: Client, suite: Any, tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "convnext.safetensors"
    save_file(timm.create_model("test_convnext", num_classes=3).state_dict(), str(path))
    model = atlas.upload_model(path, "timm:test_convnext", class_names=["cat", "dog", "fox"])
    assert model.num_classes == 3 and model.class_names == ["cat", "dog", "fox"]
    assert model.id in [m.id for m in atlas.models()]
    assert atlas.model(model.id) == model
    assert any(layer.default for layer in atlas.model_layers(model.id).layers)
    with pytest.raises(ApiError) as err:  # a name per output, or the model is refused
        atlas.upload_model(path, "timm:test_convnext", class_names=["cat"])
    assert err.value.status == 422

    async def scenario() -> None:
        async with AsyncClient(suite.url, suite.keys["tenant-a"]) as client:
            assert (await client.model(model.id)).sha256 == model.sha256
            assert model.id in [m.id async for m in client.models()]
            await client.delete_model(model.id)

    asyncio.run(scenario())
    with pytest.raises(ApiError) as err:
        atlas.model(model.id)
    assert err.value.status == 404


class AsyncFlakyTransport(httpx.AsyncHTTPTransport):
    """FlakyTransport for the async client."""

    def __init__(self, failures: int, answer: httpx.Response | None) -> None:
        super().__init__()
        self.failures, self.answer, self.seen = failures, answer, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.seen <= self.failures:
            if self.answer is None:
                raise httpx.ConnectError("connection refused (injected)", request=request)
            return self.answer
        return await super().handle_async_request(request)


def quota_answer(after: str) -> httpx.Response:
    body = {"type": "urn:neuron-atlas:problem:quota-exceeded", "title": "Quota", "status": 429}
    return httpx.Response(
        429, headers={"Retry-After": after, "Content-Type": "application/problem+json"}, json=body
    )


def test_each_wait_before_a_retry_is_told_sync_and_async(suite: Any) -> None:
    """A quota's Retry-After (a minute by default) is not a silent wait: `on_retry` hears of it."""
    key = suite.keys["tenant-a"]
    heard: list[RetryNotice] = []
    with Client(suite.url, key, transport=FlakyTransport(1, quota_answer("1")), on_retry=heard.append) as c:
        c.list_page(1)
    assert [(n.method, n.path, n.attempt, n.status, n.retry_after, n.kind) for n in heard] == [
        ("GET", "/v1/jobs", 1, 429, True, "quota-exceeded")
    ]
    assert heard[0].describe() == "quota: waiting 1 s before retrying (Retry-After)"

    policy = RetryPolicy(max_retries=2, backoff_base_s=0.05)

    async def scenario() -> list[RetryNotice]:
        told: list[RetryNotice] = []
        transport = AsyncFlakyTransport(1, None)
        async with AsyncClient(suite.url, key, transport=transport, retry=policy, on_retry=told.append) as c:
            await c.list_page(1)
        transport = AsyncFlakyTransport(1, quota_answer("1"))
        async with AsyncClient(suite.url, key, transport=transport, on_retry=told.append) as c:
            await c.list_page(1)
        return told

    told = asyncio.run(scenario())
    assert [n.status for n in told] == [None, 429]
    assert told[0].describe().startswith("the gateway could not be reached: retrying in ")
    assert told[1].describe() == "quota: waiting 1 s before retrying (Retry-After)"


def test_a_whole_download_brings_the_thumbnails_sync_and_async(
    atlas: Client, suite: Any, finished_job: FinishedJob, tmp_path: Path
) -> None:
    job_id = finished_job.job.id
    images = {image.id for image in atlas.hierarchy(job_id).images}
    atlas.download_artifacts(job_id, tmp_path / "all")
    assert thumbnail_ids(tmp_path / "all" / "thumbs") == images
    atlas.download_artifacts(job_id, tmp_path / "named", ["hierarchy.json"])
    assert [p.name for p in (tmp_path / "named").iterdir()] == ["hierarchy.json"]  # as asked

    async def scenario() -> list[Path]:
        async with AsyncClient(suite.url, suite.keys["tenant-a"]) as client:
            return await client.download_artifacts(
                job_id, tmp_path / "async", ["hierarchy.json"], thumbs=True
            )

    written = asyncio.run(scenario())
    assert thumbnail_ids(tmp_path / "async" / "thumbs") == images
    assert all(p.suffix == ".zip" for p in written if p.parent.name == "thumbs")  # a pack per shard
    assert not [a for a in atlas.artifacts(job_id).artifacts if a.name.startswith("thumbs/")]
