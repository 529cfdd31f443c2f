"""Celery tasks of the caption service: thin shells over `services.caption.stage`."""

from __future__ import annotations

from functools import lru_cache

import torch

from services.caption.captioning import Captioner
from services.caption.settings import CaptionSettings
from services.caption.stage import run_caption_shard, shard_to_caption
from shared import artifacts
from shared.devices import resolve_device
from shared.model_names import check_allowed
from shared.queue import CAPTION_SHARD
from shared.settings import get_infra_settings
from shared.tasks import JobContext, job_inputs, job_task


@lru_cache(maxsize=2)
def captioner(model_id: str, device: str | None) -> Captioner:
    """One captioner per model in this worker process; it loads its weights on first use. Only a
    hub id the deployment allows: `from_pretrained` would read a folder of this worker's disk."""
    check_allowed("options.caption_model", model_id, get_infra_settings().allowed_hub_models)
    settings = CaptionSettings()
    chosen = resolve_device(device or settings.device)  # a missing GPU is named as such
    return Captioner(model_id, torch.device(chosen), cache_dir=settings.model_cache_dir)


@job_task(CAPTION_SHARD, stage="caption")
def caption_shard(job: JobContext, shard: int) -> None:
    manifest, options = job_inputs(job)
    images = shard_to_caption(
        manifest,
        shard,
        options.shard_size,
        artifacts.stored_image_reader(job.store),
        get_infra_settings().decode_pixel_budget,
    )
    done = run_caption_shard(
        job.store, manifest, images, options, lambda: captioner(options.caption_model, options.device)
    )
    job.jobs.shard_done(job.job_id, "caption", shard, done)
