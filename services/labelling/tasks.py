"""Celery tasks of the labelling service: labels, and the final assembly of hierarchy.json
(light JSON work, so it runs here rather than in a service of its own)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from services.labelling.stage import label_step
from shared import artifacts
from shared.hierarchy import assemble_hierarchy
from shared.queue import LABELLING_LABEL, PIPELINE_ASSEMBLE
from shared.tasks import JobContext, job_task


def package_version() -> str:
    try:
        return version("neuron-atlas")
    except PackageNotFoundError:
        return "0+unknown"


@job_task(LABELLING_LABEL, stage="labelling")
def labelling_label(job: JobContext) -> None:
    rows, _ = artifacts.read_caption_shards(job.store)
    label_step(job.store, [row["caption"] for row in rows])
    job.jobs.shard_done(job.job_id, "labelling", 0, 1)


@job_task(PIPELINE_ASSEMBLE, stage="assemble")
def pipeline_assemble(job: JobContext) -> None:
    assemble_hierarchy(job.store, package_version())
    job.jobs.shard_done(job.job_id, "assemble", 0, 1)
    job.jobs.succeed(job.job_id)
