"""Celery tasks of the activation service: thin shells over `services.activation.stage`."""

from __future__ import annotations

from neuron_atlas_client.options import PipelineOptions
from neuron_core.target_model import LoadedModel, TargetSpec, target_model
from services.activation.input_check import enforce, run_input_check
from services.activation.settings import ActivationSettings
from services.activation.stage import run_activation_shard, run_groups
from shared import artifacts
from shared.ingest import decode_shard
from shared.job_public import INPUT_CHECK_REPORT
from shared.queue import ACTIVATION_GROUPS, ACTIVATION_SHARD
from shared.settings import get_infra_settings
from shared.tasks import JobContext, job_inputs, job_task, registered_weights


def job_target(job: JobContext, options: PipelineOptions) -> LoadedModel:
    """The job's target model, kept while consecutive jobs use the same one."""
    settings = ActivationSettings()
    registered = registered_weights(job, settings.registered_model_dir)
    return target_model(
        TargetSpec.of(
            options, settings.model_cache_dir, settings.device, registered, settings.max_model_parameters
        )
    )


@job_task(ACTIVATION_SHARD, stage="activation")
def activation_shard(job: JobContext, shard: int) -> None:
    manifest, options = job_inputs(job)
    images = decode_shard(
        manifest,
        shard,
        options.shard_size,
        artifacts.stored_image_reader(job.store),
        get_infra_settings().decode_pixel_budget,
    )
    done = run_activation_shard(job.store, images, options, job_target(job, options))
    # This branch decodes every image, so it is the one that counts the undecodable ones.
    job.jobs.shard_undecodable(job.job_id, shard, len(images.skipped))
    job.jobs.shard_done(job.job_id, "activation", shard, done)


@job_task(ACTIVATION_GROUPS, stage="groups")
def activation_groups(job: JobContext) -> None:
    _, options = job_inputs(job)
    check = run_input_check(
        job.store, options, lambda: job_target(job, options), artifacts.stored_image_reader(job.store)
    )
    if check is not None and check.warnings:  # on the job (GET /v1/jobs/{id}), failed or not
        job.jobs.set_report(
            job.job_id, INPUT_CHECK_REPORT, {"warnings": [w.document() for w in check.warnings]}
        )
    enforce(check, options)
    run_groups(job.store, options)
    job.jobs.shard_done(job.job_id, "groups", 0, 1)
