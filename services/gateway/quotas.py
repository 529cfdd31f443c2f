"""Per-tenant quotas at submission: concurrent jobs (429 with `Retry-After`: a slot frees when
one of the tenant's jobs ends) and images per job (the upload limit, lowered for the tenant).
The LLM spend of a job is recorded with it and enforced by the labelling worker, which alone
knows what each request costs (`services/labelling/budget.py`)."""

from __future__ import annotations

from services.gateway.problems import Problem
from services.gateway.settings import Quota


def too_many_jobs(quota: Quota, retry_after_s: int) -> Problem:
    return Problem(
        429,
        "quota-exceeded",
        "Too many jobs at once.",
        f"This API key's tenant may have {quota.max_concurrent_jobs} jobs queued, running or "
        "cancelling at once, and has that many.",
        fix=f"Try again after Retry-After seconds, when one has ended; or cancel one "
        f"(POST /v1/jobs/{{id}}:cancel). Retry in {retry_after_s} s.",
        headers={"Retry-After": str(retry_after_s)},
        quota="max_concurrent_jobs",
        limit=quota.max_concurrent_jobs,
    )
