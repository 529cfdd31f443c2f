"""Celery tasks of the labelling service: labels, relabels, and the final assembly of
hierarchy.json (light JSON work, so it runs here rather than in a service of its own)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from services.labelling.budget import LLMBudgetExceeded
from services.labelling.cache import ResponseCache
from services.labelling.settings import LabelSettings, get_settings
from services.labelling.stage import labelling_summary, run_labelling, run_relabel
from shared.hierarchy import write_hierarchy
from shared.metrics import observe_llm
from shared.model_names import check_allowed
from shared.queue import LABELLING_LABEL, LABELLING_RELABEL, PIPELINE_ASSEMBLE
from shared.sentence_embedder import Embedder
from shared.settings import get_infra_settings
from shared.tasks import JobContext, JobProgress, job_inputs, job_task, object_store

# Shared by every job and tenant: an answer depends only on (model, prompt version, input).
CACHE_PREFIX = "label-cache/"


def package_version() -> str:
    try:
        return version("neuron-atlas")
    except PackageNotFoundError:
        return "0+unknown"


@lru_cache(maxsize=2)
def embedder(name: str) -> Embedder:
    """One sentence embedder per worker process (the label quality score needs the job's); only
    a hub id the deployment allows, never a folder of this worker's disk."""
    check_allowed("options.embed_model", name, get_infra_settings().allowed_hub_models)
    return Embedder(name)


def _label_kwargs(job: JobContext) -> dict[str, Any]:
    _, options = job_inputs(job)
    return {
        "embedder": embedder(options.embed_model),
        "cache": ResponseCache(object_store(), CACHE_PREFIX),
        "progress": JobProgress(job),
        # An endpoint that is down is waited out (job_task tries again), then fails the job.
        "fail_when_unreachable": True,
    }


def _budgeted(settings: LabelSettings, job: JobContext) -> LabelSettings:
    """The settings with the job's LLM token budget (its tenant's quota when it was submitted),
    or the worker's own cap where that is lower; a budget of 0 means offline labels."""
    budget = job.jobs.llm_token_budget(job.job_id)
    if budget is None:
        return settings
    if budget == 0:  # the tenant may not use the endpoint: offline labels, and the job succeeds
        return settings.model_copy(update={"offline": True})
    own = settings.max_tokens_per_job
    return settings.model_copy(update={"max_tokens_per_job": budget if own is None else min(own, budget)})


def _report(job: JobContext) -> None:
    """The job's labelling summary; its LLM usage counted in the worker's metrics and against
    the tenant's spend window (the gateway's `max_llm_tokens_per_window` quota)."""
    summary = labelling_summary(job.store)
    job.jobs.set_report(job.job_id, "labelling", summary.document())
    used = summary.accounting
    observe_llm(summary.model, used.requests, used.prompt_tokens, used.completion_tokens, used.cost_usd)
    _count_spend(job, used.prompt_tokens + used.completion_tokens)


def _count_spend(job: JobContext, tokens: int) -> None:
    job.jobs.add_llm_spend(job.job_id, tokens, get_infra_settings().llm_spend_window_s)


@contextmanager
def _spend_counted_on_budget_failure(job: JobContext) -> Iterator[None]:
    """A run stopped by its budget has written no summary; what it sent still counts."""
    try:
        yield
    except LLMBudgetExceeded as exc:
        _count_spend(job, exc.spent)
        raise


@job_task(LABELLING_LABEL, stage="labelling")
def labelling_label(job: JobContext) -> None:
    with _spend_counted_on_budget_failure(job):
        run_labelling(job.store, settings=_budgeted(get_settings(), job), **_label_kwargs(job))
    _report(job)


@job_task(LABELLING_RELABEL, stage="labelling")
def labelling_relabel(job: JobContext, overrides: dict[str, Any]) -> None:
    """Label a finished job again with other settings; captions, clusters and neurons stay."""
    settings = _budgeted(LabelSettings.model_validate({**get_settings().model_dump(), **overrides}), job)
    with _spend_counted_on_budget_failure(job):
        run_relabel(job.store, package_version(), settings=settings, **_label_kwargs(job))
    _report(job)
    job.jobs.shard_done(job.job_id, "assemble", 0, 1)
    job.jobs.succeed(job.job_id)


@job_task(PIPELINE_ASSEMBLE, stage="assemble")
def pipeline_assemble(job: JobContext) -> None:
    write_hierarchy(job.store, package_version())
    job.jobs.shard_done(job.job_id, "assemble", 0, 1)
    job.jobs.succeed(job.job_id)
