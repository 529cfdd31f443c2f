"""Celery tasks of the labelling service: its stages of the table (shared/pipeline/stages.py), labels
and the final assembly of hierarchy.json (light JSON work, so it runs here rather than in a
service of its own), and relabels of finished jobs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from services.labelling.budget import LLMBudgetExceeded
from services.labelling.cache import ResponseCache
from services.labelling.settings import LabelSettings, get_settings
from services.labelling.stage import labelling_summary, run_relabel
from shared.jobs.queue import LABELLING_RELABEL
from shared.jobs.tasks import (
    JobContext,
    JobProgress,
    SuiteJob,
    job_inputs,
    job_task,
    object_store,
    register_stage_tasks,
)
from shared.models.model_names import check_allowed
from shared.models.sentence_embedder import Embedder
from shared.observability.metrics import observe_llm
from shared.pipeline.stages import BY_NAME
from shared.settings import get_infra_settings

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
        "progress": JobProgress(job, BY_NAME["labelling"].step),
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
    """The job's labelling summary, and its LLM use accounted."""
    job.jobs.set_report(job.job_id, "labelling", labelling_summary(job.store).document())
    _account(job)


def _account(job: JobContext) -> None:
    """The job's LLM usage counted in the worker's metrics and against the tenant's spend window
    (the gateway's `max_llm_tokens_per_window` quota)."""
    summary = labelling_summary(job.store)
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


@job_task(LABELLING_RELABEL, stage="labelling")
def labelling_relabel(job: JobContext, overrides: dict[str, Any]) -> None:
    """Label a finished job again with other settings; captions, clusters and neurons stay."""
    settings = _budgeted(LabelSettings.model_validate({**get_settings().model_dump(), **overrides}), job)
    with _spend_counted_on_budget_failure(job):
        run_relabel(job.store, package_version(), settings=settings, **_label_kwargs(job))
    _report(job)
    job.jobs.shard_done(job.job_id, "assemble", 0, 1)
    job.jobs.succeed(job.job_id)


def _label_run(job: SuiteJob) -> dict[str, Any]:
    """`run_labelling`'s settings here: the tenant's token budget, the shared response cache, and
    an endpoint that is down waited out (job_task tries again), then the job failed."""
    return {
        "settings": _budgeted(get_settings(), job.context),
        "cache": ResponseCache(object_store(), CACHE_PREFIX),
        "fail_when_unreachable": True,
    }


@contextmanager
def _accounted(job: JobContext) -> Iterator[None]:
    """The labelling stage's LLM use: counted in the worker's metrics and the tenant's spend."""
    with _spend_counted_on_budget_failure(job):
        yield
    _account(job)


TASKS = register_stage_tasks(
    "labelling",
    {
        "embedder": lambda job: embedder(job.options.embed_model),
        "labelling": _label_run,
        "version": lambda job: package_version(),
    },
    around={"labelling": _accounted},
)
