"""Faults with real processes in the middle of a job: object storage stopped for 30 s, Redis
restarted, a worker SIGKILLed mid-shard, the LLM endpoint down for less and for more than its
window; and Redis down under the gateway, and a job whose work was lost."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.helpers import wait_for
from tests.services.gateway.test_api import LIGHT, images

DONE = {"succeeded", "failed", "cancelled"}


@pytest.mark.slow
def test_a_job_survives_object_storage_stopped_for_30_s(suite: Any, s3_server: Any, sample_dir: Path) -> None:
    """Tasks that fail on the outage are tried again with growing pauses (within
    DEPENDENCY_RETRY_WINDOW_S), so the job succeeds once storage is back, with nothing lost."""
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        spec = {"options": {**LIGHT["options"], "shard_size": 2}}
        job = client.post("/v1/jobs", files=images(sample_dir, 8), data={"spec": json.dumps(spec)}).json()
        wait_for(client, f"/v1/jobs/{job['id']}", {"running", *DONE}, timeout=60)
        s3_server.stop()
        try:
            time.sleep(30)
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
        with httpx.Client(base_url=url, timeout=60) as anonymous:  # /readyz needs no key
            ready = anonymous.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"] == "job store unavailable"
        assert ready.json()["checks"] == {"redis": "unavailable", "storage": "ok"}
        assert redis.url.split(":")[-1].split("/")[0] not in ready.text
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


def test_readiness_names_what_is_down_and_not_where_it_is(suite: Any, tmp_path: Path) -> None:
    """`/readyz` answers anyone (probes send no key): it says which dependency is down, never its
    endpoint, host or port (the gateway's log has the exception)."""
    from tests.servers import ProcessGroup, free_port, free_ports, wait_http

    redis_port, s3_port = free_ports(2)  # nothing listens on either
    env = {
        **suite.env,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "S3_ENDPOINT": f"http://127.0.0.1:{s3_port}",
        "S3_RETRIES": "0",
    }
    group = ProcessGroup(tmp_path)
    port = free_port()
    group.start(
        "gateway",
        [sys.executable, "-m", "uvicorn", "services.gateway.main:app", "--port", str(port)],
        env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", group, timeout=60)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=60)
    finally:
        group.stop()
    assert ready.status_code == 503 and ready.headers["content-type"].startswith("application/problem+json")
    body = ready.json()
    assert body["detail"] == "job store unavailable; object storage unavailable"
    assert body["checks"] == {"redis": "unavailable", "storage": "unavailable"}
    for secret in (str(redis_port), str(s3_port), "127.0.0.1", "HTTPConnectionPool", suite.bucket):
        assert secret not in ready.text, secret
    log = (tmp_path / "gateway.log").read_text()
    assert "object storage unavailable" in log and str(s3_port) in log  # the detail stays server-side


def test_a_job_stuck_cancelling_can_be_deleted(suite: Any, redis_server: Any, s3_server: Any) -> None:
    """A job whose work was lost (its message gone with a Redis restart) never reaches
    `cancelled` after a cancel; DELETE still ends it, record and objects."""
    import io
    import uuid

    from shared.jobs.jobstore import JobStore

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


def running_task(client: Any, job_id: str, name: str) -> str | None:
    """The id of a task `name` of the job that a worker runs now, as the broker sees it: its
    message is taken and not yet acknowledged (acks_late, one message per worker at a time)."""
    for raw in client.hvals("unacked"):
        headers = json.loads(raw)[0]["headers"]
        if headers["task"] == name and job_id in headers["argsrepr"]:
            return str(headers["id"])
    return None


def log_lines(suite: Any, text: str) -> list[str]:
    return [
        line
        for log in sorted(suite.logs.glob("*.log"))
        for line in log.read_text().splitlines()
        if text in line
    ]


@pytest.mark.slow
def test_a_worker_killed_mid_shard_costs_that_shard_and_the_job_succeeds(
    suite: Any, redis_server: Any, sample_dir: Path
) -> None:
    """The only activation worker is SIGKILLed (no warm shutdown: an OOM kill, a lost node) while
    it runs a shard, and a replacement starts. The shard's heartbeat stops, the reconciler sends
    it again within TASK_STALL_S (8 s here), and the job succeeds with every image. Before, the
    shard waited for the visibility timeout (2 h), and the job showed `running` all that time."""
    import redis

    from tests.servers import start_worker

    assert suite.processes is not None
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    resent_before = len(log_lines(suite, "sending it again"))
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        spec = {"options": {**LIGHT["options"], "shard_size": 8}}
        job = client.post("/v1/jobs", files=images(sample_dir, 24), data={"spec": json.dumps(spec)}).json()
        deadline = time.monotonic() + 120
        while (task_id := running_task(store, job["id"], "activation.shard")) is None:
            assert time.monotonic() < deadline, "no activation shard started"
            time.sleep(0.01)
        victim = suite.processes.processes.pop("activation")
        victim.kill()
        victim.wait(10)
        start_worker(suite.processes, "activation", suite.env, name="activation-2")
        done = wait_for(client, f"/v1/jobs/{job['id']}", DONE, timeout=240)
        assert done["status"] == "succeeded", done
        hierarchy = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
        assert len(hierarchy["images"]) == 24
    resent = log_lines(suite, "sending it again")[resent_before:]
    assert len(resent) == 1 and task_id in resent[0], resent  # that shard, once; no other work
    store.close()


@pytest.mark.slow
def test_a_job_survives_a_redis_restart(suite: Any, redis_server: Any, sample_dir: Path) -> None:
    """Redis keeps an append-only file (as docs/deployment.md asks); stopped mid-job and started again on
    the same port and folder, it comes back with every job record and queued message, the
    workers and the gateway reconnect, and the job succeeds with nothing lost."""
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        spec = {"options": {**LIGHT["options"], "shard_size": 4}}
        job = client.post("/v1/jobs", files=images(sample_dir, 16), data={"spec": json.dumps(spec)}).json()
        wait_for(client, f"/v1/jobs/{job['id']}", {"running", *DONE}, timeout=60)
        redis_server.stop()
        try:
            time.sleep(3)
        finally:
            redis_server.restart()
        done = wait_for(client, f"/v1/jobs/{job['id']}", DONE, timeout=240)
        assert done["status"] == "succeeded", done
        hierarchy = client.get(f"/v1/jobs/{job['id']}/hierarchy").json()
        assert len(hierarchy["images"]) == 16


def succeeded_job(client: httpx.Client, sample_dir: Path) -> str:
    job = client.post("/v1/jobs", files=images(sample_dir, 8), data={"spec": json.dumps(LIGHT)}).json()
    done = wait_for(client, f"/v1/jobs/{job['id']}", DONE, timeout=120)
    assert done["status"] == "succeeded", done
    return str(job["id"])


@pytest.mark.slow
def test_labelling_waits_out_an_llm_outage_shorter_than_the_window(
    suite: Any, suite_llm: Any, sample_dir: Path
) -> None:
    """The endpoint refuses connections for 8 s of the suite's 25 s NEURON_ATLAS_LLM__OUTAGE_WINDOW_S:
    the labelling task is tried again after 5, then 10 s, and every label is the endpoint's.
    Before, the job succeeded at once with offline labels only (`offline-fallback`)."""
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        job_id = succeeded_job(client, sample_dir)
        asked_before = suite_llm.requests
        suite_llm.stop()
        try:
            relabel = {"offline": False, "model": "fake-model-short-outage"}
            assert client.post(f"/v1/jobs/{job_id}:relabel", json=relabel).status_code == 202
            time.sleep(8)
        finally:
            suite_llm.restart()
        done = wait_for(client, f"/v1/jobs/{job_id}", DONE, timeout=120)
    assert done["status"] == "succeeded", done
    assert set(done["labelling"]["labels"]) == {"llm:fake-model-short-outage@v1"}, done["labelling"]
    assert suite_llm.requests > asked_before


@pytest.mark.slow
def test_an_llm_outage_longer_than_the_window_fails_the_job_naming_the_endpoint(
    suite: Any, suite_llm: Any, sample_dir: Path
) -> None:
    """Down for longer than the window: the job fails with `llm-unavailable`, which says what to
    check and how to get offline labels, and shows no host, port or key. Before, it succeeded
    with offline labels and nothing said the endpoint was down."""
    with httpx.Client(base_url=suite.url, headers=suite.headers(), timeout=60) as client:
        job_id = succeeded_job(client, sample_dir)
        suite_llm.stop()
        try:
            relabel = {"offline": False, "model": "fake-model-long-outage"}
            assert client.post(f"/v1/jobs/{job_id}:relabel", json=relabel).status_code == 202
            done = wait_for(client, f"/v1/jobs/{job_id}", DONE, timeout=120)
        finally:
            suite_llm.restart()
    assert done["status"] == "failed", done
    error = done["error"]
    assert error["type"].endswith(":llm-unavailable") and "labelling endpoint" in error["title"]
    assert "NEURON_ATLAS_LLM__BASE_URL" in error["fix"] and '"offline": true' in error["fix"]
    text = json.dumps(error)
    assert "127.0.0.1" not in text and str(suite_llm.port) not in text and "key" not in text.lower()
