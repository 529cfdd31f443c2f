"""Celery tasks of the activation service: thin shells over `services.activation.stage`."""

from __future__ import annotations

from functools import lru_cache

from services.activation.stage import TargetReader, activation_shard_step, groups_step, load_target_reader
from shared import artifacts
from shared.options import PipelineOptions
from shared.queue import ACTIVATION_GROUPS, ACTIVATION_SHARD
from shared.settings import ActivationSettings
from shared.tasks import JobContext, job_inputs, job_task


@lru_cache(maxsize=1)
def _target_reader(key: str) -> TargetReader:
    settings = ActivationSettings()
    return load_target_reader(
        PipelineOptions.model_validate_json(key), settings.model_cache_dir, settings.device
    )


def target_reader(options: PipelineOptions) -> TargetReader:
    """The loaded, hooked target model, kept while consecutive jobs use the same one."""
    fields = {"model", "weights", "allow_random_weights", "seed", "layers", "device"}
    return _target_reader(PipelineOptions(**options.model_dump(include=fields)).model_dump_json())


@job_task(ACTIVATION_SHARD, stage="activation")
def activation_shard(job: JobContext, shard: int) -> None:
    manifest, options = job_inputs(job)
    done = activation_shard_step(job.store, manifest, shard, options, target_reader(options))
    job.jobs.shard_done(job.job_id, "activation", shard, done)


@job_task(ACTIVATION_GROUPS, stage="groups")
def activation_groups(job: JobContext) -> None:
    _, options = job_inputs(job)
    rows, _ = artifacts.read_caption_shards(job.store)
    groups_step(job.store, options, [row["image_id"] for row in rows])
    job.jobs.shard_done(job.job_id, "groups", 0, 1)
