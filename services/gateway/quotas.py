"""Per-tenant quotas at submission: concurrent jobs (429 with `Retry-After`: a slot frees when
one of the tenant's jobs ends), images per job (the upload limit, lowered for the tenant) and
LLM spend per window (429 with `Retry-After`: the window's end). The LLM spend of one job is
recorded with it and enforced by the labelling worker, which alone knows what each request
costs (`services/labelling/budget.py`); the worker counts what each run spent against the
tenant's window."""

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


def llm_spend_used_up(quota: Quota, spent: int, retry_after_s: int) -> Problem:
    return Problem(
        429,
        "quota-exceeded",
        "The LLM spend quota is used up.",
        f"This API key's tenant may spend {quota.max_llm_tokens_per_window:,} LLM tokens per spend "
        f"window on labels and has spent {spent:,}; the window ends in {retry_after_s} s.",
        fix="Try again after Retry-After seconds, when a new window starts. Finished jobs can "
        'still be relabelled offline (POST /v1/jobs/{id}:relabel with {"offline": true}).',
        headers={"Retry-After": str(retry_after_s)},
        quota="max_llm_tokens_per_window",
        limit=quota.max_llm_tokens_per_window,
    )
