"""Per-tenant quotas against the real suite. `tenant-quota` has its own small quotas
(tests/conftest.py `TENANT_QUOTAS`: 1 concurrent job, 3 images per job, 40 LLM tokens per job);
the other tenants keep the generous defaults."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.helpers import wait_for
from tests.services.gateway.test_api import LIGHT, assert_problem, images, submit

DONE = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def limited(suite: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-quota"), timeout=60) as c:
        yield c


def end(client: httpx.Client, job_id: str) -> None:
    """Cancel the job if it still runs, and wait until it has ended (its slot is free again)."""
    client.post(f"/v1/jobs/{job_id}:cancel")
    wait_for(client, f"/v1/jobs/{job_id}", DONE, timeout=120)


def test_a_tenant_at_its_concurrent_jobs_quota_gets_429_with_retry_after(
    limited: httpx.Client, suite: Any, sample_dir: Path
) -> None:
    first = submit(limited, images(sample_dir, 2))
    assert first.status_code == 202, first.text
    try:
        refused = submit(limited, images(sample_dir, 2))
        body = assert_problem(refused, 429, "quota-exceeded")
        assert refused.headers["retry-after"] == "7"  # GATEWAY_QUOTA_RETRY_AFTER_S in the suite
        assert body["quota"] == "max_concurrent_jobs" and body["limit"] == 1
        assert "cancel" in body["fix"]
        # other tenants are not held back by this one's quota
        with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as other:
            theirs = submit(other, images(sample_dir, 2))
            assert theirs.status_code == 202, theirs.text
            end(other, theirs.json()["id"])
    finally:
        end(limited, first.json()["id"])
    # the slot is free once the job has ended
    again = submit(limited, images(sample_dir, 2))
    assert again.status_code == 202, again.text
    end(limited, again.json()["id"])


def test_a_refused_job_leaves_no_slot_taken(limited: httpx.Client, sample_dir: Path) -> None:
    """A submission refused after its slot was taken (no usable image) gives the slot back."""
    for _ in range(2):
        assert_problem(
            submit(limited, [("files", ("notes.txt", b"hello", "text/plain"))]), 422, "invalid-input"
        )
    accepted = submit(limited, images(sample_dir, 1))
    assert accepted.status_code == 202, accepted.text
    end(limited, accepted.json()["id"])


def test_more_images_than_the_tenants_quota_are_refused(
    limited: httpx.Client, suite: Any, sample_dir: Path
) -> None:
    body = assert_problem(submit(limited, images(sample_dir, 4)), 422, "limit-exceeded")
    assert "more than 3 images" in body["detail"] and body["fix"]
    # another tenant may send 4 (the suite's deployment-wide limit is 40)
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as other:
        theirs = submit(other, images(sample_dir, 4))
        assert theirs.status_code == 202, theirs.text
        end(other, theirs.json()["id"])


def test_labelling_over_the_tenants_llm_budget_fails_the_run_before_any_request(
    limited: httpx.Client, suite_llm: Any, sample_dir: Path
) -> None:
    # Captions no other test sends, so no cached answer (which costs nothing) can stand in.
    marker = uuid.uuid4().hex[:8]
    files = images(sample_dir, 3)[:3]
    spec = {
        **LIGHT,
        "captions": {name: f"photo {marker} number {i}" for i, (_, (name, *_)) in enumerate(files)},
    }
    job = wait_for(limited, submit(limited, files, spec).headers["location"], DONE)
    assert job["status"] == "succeeded", job["error"]  # offline labels cost nothing
    seen = suite_llm.requests
    assert limited.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": False}).status_code == 202
    failed = wait_for(limited, f"/v1/jobs/{job['id']}", DONE)
    assert failed["status"] == "failed"
    error = failed["error"]
    assert error["type"].endswith(":llm-budget-exceeded"), error
    assert "budget of 40 tokens" in error["detail"] and "offline" in error["fix"]
    assert suite_llm.requests == seen  # nothing was sent, so nothing was spent


def test_a_tenant_that_spent_its_llm_window_gets_429_until_it_ends(
    suite: Any, suite_llm: Any, sample_dir: Path
) -> None:
    """`tenant-spend` may spend 1 LLM token a window: its first LLM labelling run goes through
    (the quota is checked before work starts), and then new jobs and LLM relabels answer 429
    with the seconds left in the window, while offline relabels and other tenants go on."""
    marker = uuid.uuid4().hex[:8]
    files = images(sample_dir, 3)[:3]
    spec = {**LIGHT, "captions": {name: f"picture {marker} {i}" for i, (_, (name, *_)) in enumerate(files)}}
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-spend"), timeout=60) as client:
        job = wait_for(client, submit(client, files, spec).headers["location"], DONE)
        assert job["status"] == "succeeded", job["error"]  # offline labels: nothing spent yet
        seen = suite_llm.requests
        assert client.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": False}).status_code == 202
        relabelled = wait_for(client, f"/v1/jobs/{job['id']}", DONE)
        assert relabelled["status"] == "succeeded", relabelled["error"]
        assert relabelled["labelling"]["source"] == "llm" and suite_llm.requests > seen

        refused = submit(client, files, spec)
        body = assert_problem(refused, 429, "quota-exceeded")
        assert body["quota"] == "max_llm_tokens_per_window" and body["limit"] == 1
        assert 0 < int(refused.headers["retry-after"]) <= 86_400 and "offline" in body["fix"]
        again = client.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": False})
        assert assert_problem(again, 429, "quota-exceeded")["quota"] == "max_llm_tokens_per_window"
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"  # untouched
        offline = client.post(f"/v1/jobs/{job['id']}:relabel", json={"offline": True})
        assert offline.status_code == 202, offline.text
        assert wait_for(client, f"/v1/jobs/{job['id']}", DONE)["status"] == "succeeded"
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as other:
        theirs = submit(other, images(sample_dir, 2))
        assert theirs.status_code == 202, theirs.text
        end(other, theirs.json()["id"])
