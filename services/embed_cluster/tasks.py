"""Celery tasks of the embed_cluster service: its stage of the table (shared/pipeline/stages.py), with
one sentence embedder per model kept in the worker process."""

from __future__ import annotations

from functools import lru_cache

from services.embed_cluster.settings import EmbedClusterSettings
from shared.jobs.tasks import SuiteJob, register_stage_tasks
from shared.models.model_names import check_allowed
from shared.models.sentence_embedder import Embedder
from shared.settings import get_infra_settings


@lru_cache(maxsize=2)
def embedder(name: str, device: str | None) -> Embedder:
    """One embedder per model in this worker process; it loads on first use. Only a hub id the
    deployment allows: a path would load a folder of this worker's disk."""
    check_allowed("options.embed_model", name, get_infra_settings().allowed_hub_models)
    return Embedder(name, device or EmbedClusterSettings().device)


def job_embedder(job: SuiteJob) -> Embedder:
    return embedder(job.options.embed_model, job.options.device)


TASKS = register_stage_tasks("embed_cluster", {"embedder": job_embedder})
