"""Celery tasks of the embed_cluster service: thin shells over `services.embed_cluster.stage`."""

from __future__ import annotations

from functools import lru_cache

from services.embed_cluster.settings import EmbedClusterSettings
from services.embed_cluster.stage import run_embed_cluster
from shared.model_names import check_allowed
from shared.queue import EMBED_CLUSTER_RUN
from shared.sentence_embedder import Embedder
from shared.settings import get_infra_settings
from shared.tasks import JobContext, job_inputs, job_task


@lru_cache(maxsize=2)
def embedder(name: str, device: str | None) -> Embedder:
    """One embedder per model in this worker process; it loads on first use. Only a hub id the
    deployment allows: a path would load a folder of this worker's disk."""
    check_allowed("options.embed_model", name, get_infra_settings().allowed_hub_models)
    return Embedder(name, device or EmbedClusterSettings().device)


@job_task(EMBED_CLUSTER_RUN, stage="embed_cluster")
def embed_cluster_run(job: JobContext) -> None:
    _, options = job_inputs(job)
    run_embed_cluster(job.store, options, embedder(options.embed_model, options.device))
    job.jobs.shard_done(job.job_id, "embed_cluster", 0, 1)
