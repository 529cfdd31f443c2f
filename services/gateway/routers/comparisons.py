"""`/v1/comparisons`: what changed between two of the caller's finished jobs over the same images
(docs/comparison.md). An uncertainty worker computes it (the gateway has no numpy-heavy work);
the gateway waits for its answer, as it does for a model check, and keeps nothing itself."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.exceptions import TimeoutError as NoAnswer
from fastapi import APIRouter, Path, Response

from neuron_atlas_client.contracts.comparison import (
    Comparison,
    ComparisonPublic,
    ComparisonRequest,
    ComparisonSummary,
)
from services.gateway.deps import JobsDep, StoreDep, TenantDep
from services.gateway.problems import RETRY_AFTER_S, Problem
from shared.jobs.comparisons import COMPARE, COMPARE_QUEUE, comparison_key
from shared.jobs.jobstore import JobRecord, JobStore
from shared.jobs.queue import get_app
from shared.storage.stores import S3Store

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/comparisons", tags=["comparisons"])

# A comparison reads two jobs' activation shards and hierarchy.json: seconds, a minute for a
# large job on a busy worker.
COMPARISON_TIMEOUT_S = 300.0
ComparisonId = Path(pattern=r"^[0-9a-f]{32}$", description="The comparison's id.")


def _finished_job(jobs: JobStore, tenant: str, job_id: str) -> JobRecord:
    record = jobs.get(job_id) if len(job_id) == 32 and job_id.isalnum() else None
    if record is None or record.tenant != tenant:  # another tenant's job is as absent as none
        raise Problem(404, "not-found", f"No job {job_id}.")
    if record.status != "succeeded":
        raise Problem(
            409,
            "job-not-finished",
            f"Job {job_id} is {record.status}; only finished jobs can be compared.",
            fix="Wait until both jobs have succeeded.",
        )
    return record


def _ask_worker(args: list[Any]) -> dict[str, Any]:
    """Send the comparison to an uncertainty worker and wait for its answer (blocking: FastAPI
    runs this route in its thread pool)."""
    result = get_app().send_task(COMPARE, args=args, queue=COMPARE_QUEUE)
    try:
        answer: dict[str, Any] = result.get(timeout=COMPARISON_TIMEOUT_S, propagate=True)
    except NoAnswer:
        raise Problem(
            503,
            "comparison-unavailable",
            "No uncertainty worker compared the jobs in time.",
            f"The comparison did not finish within {COMPARISON_TIMEOUT_S:.0f} s.",
            fix="Try again shortly; if it persists, ask the operator whether uncertainty workers run.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    except Exception as exc:  # the worker crashed or was killed
        log.error("comparison failed in the worker: %s", type(exc).__name__)
        raise Problem(
            500,
            "comparison-failed",
            "The comparison failed in the worker.",
            fix="Try again; if it fails again, ask the operator to look at the uncertainty workers' logs.",
        ) from None
    finally:
        result.forget()
    return answer


@router.post("", status_code=201, response_model=ComparisonPublic)
def create_comparison(
    body: ComparisonRequest, response: Response, tenant: TenantDep, jobs: JobsDep
) -> ComparisonPublic:
    """Compare job `a` (the reference) with job `b` (the candidate): two of your finished jobs over
    the same images. Per concept: the neurons gained and lost, tested against same-model noise,
    and each model's causal effect. 422 when the two jobs cannot be compared (other images,
    another concept tree, other group options), with what to do."""
    for job_id in (body.a, body.b):
        _finished_job(jobs, tenant, job_id)
    comparison_id = uuid.uuid4().hex
    answer = _ask_worker([tenant, comparison_id, body.a, body.b, body.alpha])
    if "problem" in answer:
        found = answer["problem"]
        status = 503 if str(found["kind"]).endswith("-unavailable") else 422
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        raise Problem(status, found["kind"], found["problem"], fix=found["fix"], headers=headers)
    response.headers["Location"] = f"/v1/comparisons/{comparison_id}"
    return ComparisonPublic(
        id=comparison_id,
        a=body.a,
        b=body.b,
        mode=answer["ok"]["mode"],
        summary=ComparisonSummary.model_validate(answer["ok"]["summary"]),
    )


def _stored(store: S3Store, tenant: str, comparison_id: str) -> bytes:
    try:
        return store.get_bytes(comparison_key(tenant, comparison_id))
    except FileNotFoundError:
        raise Problem(404, "not-found", f"No comparison {comparison_id}.") from None


@router.get("/{comparison_id}", response_model=ComparisonPublic)
def get_comparison(store: StoreDep, tenant: TenantDep, comparison_id: str = ComparisonId) -> ComparisonPublic:
    """A comparison's jobs and summary."""
    comparison = Comparison.model_validate_json(_stored(store, tenant, comparison_id))
    return ComparisonPublic(
        id=comparison_id,
        a=comparison.a.source,
        b=comparison.b.source,
        mode=comparison.method.mode,
        summary=comparison.summary,
    )


@router.get("/{comparison_id}/comparison", response_model=Comparison)
def get_comparison_document(
    store: StoreDep, tenant: TenantDep, comparison_id: str = ComparisonId
) -> Response:
    """The whole comparison.json (schema: shared/schemas/comparison.schema.json)."""
    return Response(_stored(store, tenant, comparison_id), media_type="application/json")
