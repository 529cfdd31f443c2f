"""Celery tasks of the uncertainty service: its stage of the table (shared/pipeline/stages.py)."""

from __future__ import annotations

from neuron_core.target_model import LoadedModel, TargetSpec, target_model
from services.uncertainty.settings import UncertaintySettings
from shared.jobs.tasks import register_stage_tasks, registered_weights
from shared.pipeline.stage_job import StageJob


def job_target(job: StageJob) -> LoadedModel:
    """The job's (or one model's, in a multi-model job) target model, under this service's own
    limits and cache."""
    settings = UncertaintySettings()
    registered = registered_weights(job.store, settings.registered_model_dir)
    return target_model(
        TargetSpec.of(
            job.options, settings.model_cache_dir, settings.device, registered, settings.max_model_parameters
        )
    )


TASKS = register_stage_tasks("uncertainty", {"target": job_target})
