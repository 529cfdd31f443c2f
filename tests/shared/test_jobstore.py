"""Job records on a real redis-server: transitions, idempotent progress, pages, idempotency keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.jobs.jobstore import JobStore


@pytest.fixture
def jobs(redis_server: Any) -> Iterator[JobStore]:
    store = JobStore.from_url(redis_server.url)
    yield store
    store.redis.close()


def new(jobs: JobStore, tenant: str = "t") -> str:
    job_id = uuid.uuid4().hex
    jobs.create(job_id, tenant, images=10, skipped=1, shards=2, totals={"caption": 10, "activation": 10})
    return job_id


def test_first_task_moves_a_queued_job_to_running_and_stage_only_advances(jobs: JobStore) -> None:
    job_id = new(jobs)
    assert jobs.begin(job_id, "activation")
    assert jobs.begin(job_id, "caption")  # the parallel branch reports later: the stage stays
    record = jobs.get(job_id)
    assert record is not None and record.status == "running" and record.stage == "activation"
    assert record.started_at is not None


def test_a_shard_that_runs_twice_counts_once(jobs: JobStore) -> None:
    job_id = new(jobs)
    jobs.shard_done(job_id, "caption", 0, 5)
    jobs.shard_done(job_id, "caption", 0, 5)
    jobs.shard_done(job_id, "caption", 1, 5)
    record = jobs.get(job_id)
    assert record is not None and record.progress["caption"] == {"done": 10, "total": 10}
    assert record.progress["activation"] == {"done": 0, "total": 10}


def test_cancelling_a_running_job_stops_its_next_task(jobs: JobStore) -> None:
    job_id = new(jobs)
    jobs.begin(job_id, "caption")
    assert jobs.request_cancel(job_id) == "running"
    assert jobs.status(job_id) == "cancelling"
    assert not jobs.begin(job_id, "caption")
    assert jobs.status(job_id) == "cancelled"


def test_a_queued_job_is_cancelled_at_once_and_never_starts(jobs: JobStore) -> None:
    job_id = new(jobs)
    assert jobs.request_cancel(job_id) == "queued"
    assert jobs.status(job_id) == "cancelled"
    assert not jobs.begin(job_id, "caption")


def test_failure_is_recorded_once_and_blocks_later_tasks(jobs: JobStore) -> None:
    job_id = new(jobs)
    jobs.begin(job_id, "caption")
    jobs.fail(job_id, {"type": "internal", "title": "first"})
    jobs.fail(job_id, {"type": "internal", "title": "second"})
    record = jobs.get(job_id)
    assert (
        record is not None
        and record.status == "failed"
        and record.error == {"type": "internal", "title": "first"}
    )
    assert not jobs.begin(job_id, "groups")
    assert jobs.succeed(job_id) == "failed" and jobs.status(job_id) == "failed"


def test_a_failed_job_is_at_the_stage_that_failed(jobs: JobStore) -> None:
    """Caption and activation run side by side, and the stage only moves forward while the job
    runs: a caption shard that fails after the activation branch began must not leave the job at
    `activation` while its error says the caption stage failed (issue 26)."""
    job_id = new(jobs)
    jobs.begin(job_id, "caption")
    jobs.begin(job_id, "activation")
    jobs.fail(job_id, {"type": "internal", "title": "The caption stage failed"}, stage="caption")
    record = jobs.get(job_id)
    assert record is not None and record.status == "failed" and record.stage == "caption"
    jobs.fail(job_id, {"type": "internal", "title": "late"}, stage="activation")  # already ended
    record = jobs.get(job_id)
    assert record is not None and record.stage == "caption" and record.error is not None
    assert record.error["title"] == "The caption stage failed"


def test_pages_are_newest_first_and_per_tenant(jobs: JobStore) -> None:
    tenant = uuid.uuid4().hex
    made = [new(jobs, tenant) for _ in range(5)]
    new(jobs, "someone-else")
    seen, cursor = [], None
    while True:
        page, cursor = jobs.page(tenant, 2, cursor)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert seen == made[::-1]
    jobs.delete(made[0])
    assert jobs.get(made[0]) is None
    assert [r.id for r in jobs.page(tenant, 10)[0]] == made[:0:-1]


def test_idempotency_key_is_claimed_once_then_replayed(jobs: JobStore) -> None:
    tenant, key = uuid.uuid4().hex, "k"
    assert jobs.reserve_idempotency(tenant, key, "fp", 60) is None
    assert jobs.reserve_idempotency(tenant, key, "fp", 60) == {"fingerprint": "fp", "state": "pending"}
    jobs.complete_idempotency(tenant, key, "fp", {"status": 202}, 60)
    assert jobs.reserve_idempotency(tenant, key, "other", 60)["response"] == {"status": 202}  # type: ignore[index]
    jobs.release_idempotency(tenant, key)
    assert jobs.reserve_idempotency(tenant, key, "other", 60) is None


def test_a_cancelled_relabel_leaves_the_job_succeeded(jobs: JobStore) -> None:
    job_id = new(jobs)
    jobs.begin(job_id, "caption")
    jobs.succeed(job_id)
    assert jobs.reopen(job_id, "labelling") == "succeeded"
    assert jobs.request_cancel(job_id) == "running"
    assert not jobs.begin(job_id, "labelling")  # the relabel task notices the cancel
    assert jobs.status(job_id) == "succeeded"
    # a later relabel that finishes, then a cancel of a finished job, changes nothing
    assert jobs.reopen(job_id, "labelling") == "succeeded"
    jobs.succeed(job_id)
    assert jobs.request_cancel(job_id) == "succeeded" and jobs.status(job_id) == "succeeded"
    # an ordinary job that is cancelled still ends cancelled
    other = new(jobs)
    jobs.begin(other, "caption")
    jobs.request_cancel(other)
    jobs.succeed(other)
    assert jobs.status(other) == "cancelled"
