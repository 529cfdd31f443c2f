"""Task locks, heartbeats and the reconciler on a real redis-server with real kombu messages:
one copy of a task runs at a time, a taken task that nobody runs goes back to its queue, and
after TASK_MAX_RESENDS its job fails."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from shared.jobs.jobstore import JobStore
from shared.jobs.queue import TASK_STAGES
from shared.jobs.reconciler import Reconciler
from shared.jobs.task_heartbeat import TaskHeartbeat
from tests.servers import RedisServer

QUEUE = "heartbeat-test-queue"  # not a suite queue: the session's workers share this Redis


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    # A database of its own: the session suite's workers sweep database 0 for stalled tasks.
    connection = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/15", decode_responses=True)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


def running_job(jobs: JobStore) -> str:
    job_id = uuid.uuid4().hex
    jobs.create(job_id, "tenant-a", images=2, skipped=0, shards=1, totals={"caption": 2})
    assert jobs.begin(job_id, "caption")
    return job_id


def test_a_second_copy_skips_while_the_first_runs_and_after_it_finished(client: redis.Redis) -> None:
    watch = TaskHeartbeat(client, stall_s=30, done_ttl_s=60)
    task_id = uuid.uuid4().hex
    assert watch.claim(task_id, "first") == "claimed"
    assert watch.claim(task_id, "second") == "running-elsewhere"
    assert watch.beat(task_id, "first") and not watch.beat(task_id, "second")
    watch.release(task_id, "first", done=True)
    assert watch.claim(task_id, "late") == "done"


def test_a_task_released_for_a_retry_can_be_claimed_again(client: redis.Redis) -> None:
    watch = TaskHeartbeat(client, stall_s=30, done_ttl_s=60)
    task_id = uuid.uuid4().hex
    assert watch.claim(task_id, "first") == "claimed"
    watch.release(task_id, "first", done=False)
    assert watch.claim(task_id, "retried") == "claimed"


def test_a_lock_without_beats_lapses_after_the_stall_limit(client: redis.Redis) -> None:
    watch = TaskHeartbeat(client, stall_s=1, done_ttl_s=60)
    task_id = uuid.uuid4().hex
    assert watch.claim(task_id, "killed") == "claimed"
    time.sleep(1.3)  # its worker was SIGKILLed: no beat refreshed the lock
    assert watch.claim(task_id, "redelivered") == "claimed"


def test_beats_from_a_thread_keep_the_lock(client: redis.Redis) -> None:
    watch = TaskHeartbeat(client, stall_s=1, done_ttl_s=60)
    task_id = uuid.uuid4().hex
    assert watch.claim(task_id, "busy") == "claimed"
    with watch.beating(task_id, "busy"):
        time.sleep(2.0)  # a body in one long call, past twice the stall limit
        assert watch.claim(task_id, "other") == "running-elsewhere"
    watch.release(task_id, "busy", done=True)


@pytest.fixture
def broker(client: redis.Redis) -> Iterator[tuple[Celery, Any]]:
    """A Celery app and a kombu channel on the test database: the app sends task messages, the
    channel takes them as a worker does (into kombu's `unacked` hash), and nobody runs them."""
    url = client.connection_pool.connection_kwargs
    app = Celery("reconciler-test", broker=f"redis://{url['host']}:{url['port']}/{url['db']}")
    app.conf.task_routes = {"*": {"queue": QUEUE}}
    with app.connection_for_write() as connection:
        yield app, connection.default_channel
    app.close()


def take(app: Celery, channel: Any, job_id: str) -> str:
    """A caption.shard message of the job, sent and taken by a worker that then died."""
    result = app.send_task("caption.shard", args=[job_id, 0])
    assert channel.basic_get(QUEUE, no_ack=False) is not None
    return str(result.id)


def reconciler(client: redis.Redis, channel: Any, stall_s: float = 1) -> Reconciler:
    watch = TaskHeartbeat(client, stall_s, 60)
    return Reconciler(watch, JobStore(client), channel, TASK_STAGES, max_resends=2, interval_s=0.01)


def test_a_task_nobody_runs_goes_back_to_its_queue_then_its_job_fails_as_stalled(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    app, channel = broker
    watcher, jobs = reconciler(client, channel), JobStore(client)
    job_id = running_job(jobs)
    jobs.begin(job_id, "activation")  # the parallel branch moved the job's stage past caption
    task_id = take(app, channel, job_id)
    assert watcher.sweep().get(task_id) is None  # taken less than TASK_STALL_S ago
    for attempt in (1, 2):
        time.sleep(0.02)
        assert watcher.sweep(now=time.time() + 2).get(task_id) == "resent", attempt
        assert client.llen(QUEUE) == 1  # back in its queue, for the next worker
        assert channel.basic_get(QUEUE, no_ack=False) is not None  # taken, and lost again
    time.sleep(0.02)
    assert watcher.sweep(now=time.time() + 2).get(task_id) == "failed"
    record = jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.error is not None
    assert record.error["type"].endswith(":stalled") and "caption.shard" in record.error["detail"]
    assert record.stage == "caption"  # the stage whose task stalled, not the furthest one reached
    assert client.hlen("unacked") == 0 and client.llen(QUEUE) == 0


def test_a_running_task_is_left_alone_however_long_it_runs(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    app, channel = broker
    watcher = reconciler(client, channel)
    task_id = take(app, channel, running_job(JobStore(client)))
    assert watcher.heartbeats.claim(task_id, "alive") == "claimed"
    assert watcher.sweep(now=time.time() + 2).get(task_id) == "running"
    assert client.llen(QUEUE) == 0


def test_a_finished_task_whose_acknowledgement_was_lost_is_dropped(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    app, channel = broker
    watcher = reconciler(client, channel)
    task_id = take(app, channel, running_job(JobStore(client)))
    watcher.heartbeats.claim(task_id, "ran")
    watcher.heartbeats.release(task_id, "ran", done=True)
    assert watcher.sweep(now=time.time() + 2).get(task_id) == "finished"
    assert client.hlen("unacked") == 0 and client.llen(QUEUE) == 0


def test_the_lost_task_of_a_cancelling_job_ends_it(client: redis.Redis, broker: tuple[Celery, Any]) -> None:
    app, channel = broker
    watcher, jobs = reconciler(client, channel), JobStore(client)
    job_id = running_job(jobs)
    task_id = take(app, channel, job_id)
    assert jobs.request_cancel(job_id) == "running"
    assert watcher.sweep(now=time.time() + 2).get(task_id) == "job-ended"
    assert jobs.status(job_id) == "cancelled" and client.llen(QUEUE) == 0


def test_a_retry_waiting_for_its_countdown_is_left_alone(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    app, channel = broker
    watcher = reconciler(client, channel)
    result = app.send_task("caption.shard", args=[running_job(JobStore(client)), 0], countdown=30)
    assert channel.basic_get(QUEUE, no_ack=False) is not None
    assert watcher.sweep(now=time.time() + 2).get(str(result.id)) == "waiting-for-retry"


# --- the job watchdog: work lost outright (a message that never reached `unacked`) ---------------


def idle_job(jobs: JobStore, client: redis.Redis, status: str = "running") -> str:
    """An active job whose last progress was long ago (the quota's active set holds it)."""
    job_id = running_job(jobs)
    assert jobs.take_slot("tenant-a", job_id, 100)
    if status == "cancelling":
        jobs.request_cancel(job_id)
    client.hset(f"job:{job_id}", "updated_at", "2026-01-01T00:00:00.000+00:00")
    return job_id


def watchdog(client: redis.Redis, channel: Any) -> Reconciler:
    watch = TaskHeartbeat(client, 1, 60)
    return Reconciler(watch, JobStore(client), channel, TASK_STAGES, 2, interval_s=0.01, queues=(QUEUE,))


def test_an_idle_job_with_no_work_anywhere_fails_as_lost(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    _, channel = broker
    jobs = JobStore(client)
    job_id = idle_job(jobs, client)
    assert watchdog(client, channel).sweep().get(f"job:{job_id}") == "lost"
    record = jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.error is not None
    assert record.error["type"].endswith(":lost") and "Submit the job again" in record.error["fix"]


def test_an_idle_job_whose_message_waits_in_a_queue_is_left_alone(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    app, channel = broker
    jobs = JobStore(client)
    job_id = idle_job(jobs, client)
    app.send_task("caption.shard", args=[job_id, 0])  # queued: no worker for it yet
    assert f"job:{job_id}" not in watchdog(client, channel).sweep()
    assert jobs.status(job_id) == "running"


def test_an_idle_job_whose_message_is_taken_is_left_to_the_task_reconciler(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    app, channel = broker
    jobs = JobStore(client)
    job_id = idle_job(jobs, client)
    take(app, channel, job_id)
    assert f"job:{job_id}" not in watchdog(client, channel).sweep()
    assert jobs.status(job_id) == "running"


def test_an_idle_job_with_a_task_running_is_left_alone(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    _, channel = broker
    jobs = JobStore(client)
    job_id = idle_job(jobs, client)
    watch = TaskHeartbeat(client, 1, 60)
    with watch.beating(uuid.uuid4().hex, "busy", job_id):  # one long task, no progress yet
        time.sleep(1.5)
        assert f"job:{job_id}" not in watchdog(client, channel).sweep()
    assert jobs.status(job_id) == "running"


def test_a_cancelling_job_whose_work_was_lost_ends_cancelled(
    client: redis.Redis, broker: tuple[Celery, Any]
) -> None:
    _, channel = broker
    jobs = JobStore(client)
    job_id = idle_job(jobs, client, status="cancelling")
    assert watchdog(client, channel).sweep().get(f"job:{job_id}") == "cancelled"
    assert jobs.status(job_id) == "cancelled"
