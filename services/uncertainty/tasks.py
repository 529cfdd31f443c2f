"""Celery tasks of the uncertainty service: a thin shell over `services.uncertainty.stage`."""

from __future__ import annotations

from neuron_core.target_model import TargetSpec, target_model
from services.uncertainty.settings import UncertaintySettings
from services.uncertainty.stage import run_uncertainty
from shared import artifacts
from shared.queue import UNCERTAINTY_RUN
from shared.tasks import JobContext, job_inputs, job_task, registered_weights


@job_task(UNCERTAINTY_RUN, stage="uncertainty")
def uncertainty_run(job: JobContext) -> None:
    _, options = job_inputs(job)
    settings = UncertaintySettings()
    registered = registered_weights(job, settings.registered_model_dir)
    target = target_model(
        TargetSpec.of(
            options, settings.model_cache_dir, settings.device, registered, settings.max_model_parameters
        )
    )
    uncertainty = run_uncertainty(job.store, options, target, artifacts.stored_image_reader(job.store))
    job.jobs.set_report(job.job_id, "uncertainty", uncertainty.summary.document())
    job.jobs.shard_done(job.job_id, "uncertainty", 0, 1)
