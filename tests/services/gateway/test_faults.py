"""Faults with real processes: object storage stopped in the middle of a job."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.helpers import wait_for
from tests.services.gateway.test_api import LIGHT, images

DONE = {"succeeded", "failed", "cancelled"}


@pytest.mark.slow
def test_a_job_survives_object_storage_stopped_for_20_s(suite: Any, s3_server: Any, sample_dir: Path) -> None:
    """Tasks that fail on the outage are tried again with growing pauses (within
    DEPENDENCY_RETRY_WINDOW_S), so the job succeeds once storage is back, with nothing lost."""
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        spec = {"options": {**LIGHT["options"], "shard_size": 2}}
        job = client.post("/v1/jobs", files=images(sample_dir, 8), data={"spec": json.dumps(spec)}).json()
        wait_for(client, f"/v1/jobs/{job['id']}", {"running", *DONE}, timeout=60)
        s3_server.stop()
        try:
            time.sleep(20)
            # the gateway still answers status polls from Redis while storage is down
            assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
        finally:
            s3_server.restart()
        done = wait_for(client, f"/v1/jobs/{job['id']}", DONE, timeout=300)
        assert done["status"] == "succeeded", done
        hierarchy = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
        assert len(hierarchy["images"]) == 8


def test_with_redis_down_the_gateway_answers_503_and_keeps_nothing(
    suite: Any, s3_server: Any, sample_dir: Path, tmp_path: Path
) -> None:
    """A gateway of its own on a Redis of its own (the session's Redis stays up for the rest)."""
    from tests.servers import ProcessGroup, start_gateway, start_redis

    redis = start_redis(tmp_path)
    group = ProcessGroup(tmp_path)
    try:
        url = start_gateway(group, {**suite.env, "REDIS_URL": redis.url})
        s3 = s3_server.client()
        objects_before = {
            o.object_name for o in s3.list_objects(suite.bucket, prefix="jobs/", recursive=True)
        }
        redis.stop()
        with httpx.Client(base_url=url, headers=suite.headers(), timeout=60) as client:
            for response in (
                client.post("/v1/jobs", files=images(sample_dir, 2), data={"spec": json.dumps(LIGHT)}),
                client.post(
                    "/v1/jobs",
                    files=images(sample_dir, 2),
                    data={"spec": json.dumps(LIGHT)},
                    headers={"Idempotency-Key": "during-the-outage"},
                ),
                client.get("/v1/jobs"),
                client.get("/v1/jobs/" + "0" * 32),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert int(response.headers["retry-after"]) > 0
                body = response.json()
                assert (
                    body["type"].endswith(":redis-unavailable")
                    and redis.url.split(":")[-1] not in response.text
                )
        objects_after = {o.object_name for o in s3.list_objects(suite.bucket, prefix="jobs/", recursive=True)}
        assert objects_after <= objects_before  # no orphaned jobs/<id>/ objects
    finally:
        group.stop()
        redis.stop()


def test_a_job_stuck_cancelling_can_be_deleted(suite: Any, redis_server: Any, s3_server: Any) -> None:
    """A job whose work was lost (its message gone with a Redis restart) never reaches
    `cancelled` after a cancel; DELETE still ends it, record and objects."""
    import io
    import uuid

    from shared.jobstore import JobStore

    jobs = JobStore.from_url(redis_server.url)
    job_id = uuid.uuid4().hex
    jobs.create(job_id, "tenant-a", images=2, skipped=0, shards=1, totals={"caption": 2})
    jobs.begin(job_id, "caption")  # it ran, then its next message was lost
    s3 = s3_server.client()
    s3.put_object(suite.bucket, f"jobs/{job_id}/manifest.json", io.BytesIO(b"{}"), 2)
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        assert client.post(f"/v1/jobs/{job_id}:cancel").json()["status"] == "cancelling"
        assert client.post(f"/v1/jobs/{job_id}:cancel").status_code == 202  # asking again is fine
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert list(s3.list_objects(suite.bucket, prefix=f"jobs/{job_id}/", recursive=True)) == []
    jobs.redis.close()
