"""Celery tasks of the uncertainty service: a thin shell over `services.uncertainty.stage`."""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from services.activation import activations as act
from services.activation.target_model import load_target_model
from services.uncertainty.stage import manifest_image_reader, uncertainty_step
from shared import artifacts
from shared.options import PipelineOptions
from shared.queue import UNCERTAINTY_RUN
from shared.settings import UncertaintySettings
from shared.tasks import JobContext, job_inputs, job_task


@lru_cache(maxsize=1)
def _target(key: str) -> nn.Module:
    options, settings = PipelineOptions.model_validate_json(key), UncertaintySettings()
    loaded = load_target_model(
        options.model, options.weights, options.allow_random_weights, settings.model_cache_dir, options.seed
    )
    return loaded.module.to(act.pick_device(options.device or settings.device))


def target_model(options: PipelineOptions) -> nn.Module:
    """The job's target model, kept while consecutive jobs use the same one."""
    fields = {"model", "weights", "allow_random_weights", "seed", "device"}
    return _target(PipelineOptions(**options.model_dump(include=fields)).model_dump_json())


@job_task(UNCERTAINTY_RUN, stage="uncertainty")
def uncertainty_run(job: JobContext) -> None:
    manifest, options = job_inputs(job)
    image_ids = [row["image_id"] for row in artifacts.read_usable_captions(job.store)]
    model = target_model(options)
    read = manifest_image_reader(
        manifest, image_ids, lambda entry: job.store.get_bytes(artifacts.manifest_image_key(entry))
    )
    document = uncertainty_step(job.store, options, image_ids, model, read, next(model.parameters()).device)
    job.jobs.set_report(job.job_id, "uncertainty", document["summary"])
    job.jobs.shard_done(job.job_id, "uncertainty", 0, 1)
