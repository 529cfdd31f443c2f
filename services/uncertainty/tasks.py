"""Celery tasks of the uncertainty service: its stage of the table (shared/pipeline/stages.py)."""

from __future__ import annotations

from neuron_core.target_model import LoadedModel, TargetSpec, target_model
from services.uncertainty.settings import UncertaintySettings
from shared.jobs.tasks import SuiteJob, register_stage_tasks, registered_weights


def job_target(job: SuiteJob) -> LoadedModel:
    """The job's target model, under this service's own limits and cache."""
    settings = UncertaintySettings()
    registered = registered_weights(job.context, settings.registered_model_dir)
    return target_model(
        TargetSpec.of(
            job.options, settings.model_cache_dir, settings.device, registered, settings.max_model_parameters
        )
    )


TASKS = register_stage_tasks("uncertainty", {"target": job_target})
