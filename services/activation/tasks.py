"""Celery tasks of the activation service: its stages of the table (shared/pipeline/stages.py), with the
job's target model kept while consecutive jobs use the same one."""

from __future__ import annotations

from neuron_core.target_model import LoadedModel, TargetSpec, target_model
from services.activation.settings import ActivationSettings
from shared.jobs.tasks import register_stage_tasks, registered_weights
from shared.pipeline.stage_job import StageJob


def job_target(job: StageJob) -> LoadedModel:
    """The job's (or one model's, in a multi-model job) target model (`target_model` caches it
    in this worker process)."""
    settings = ActivationSettings()
    registered = registered_weights(job.store, settings.registered_model_dir)
    return target_model(
        TargetSpec.of(
            job.options, settings.model_cache_dir, settings.device, registered, settings.max_model_parameters
        )
    )


TASKS = register_stage_tasks("activation", {"target": job_target})
