"""Celery tasks of the caption service: its stage of the table (shared/pipeline/stages.py), with one
captioner per model kept in the worker process."""

from __future__ import annotations

from functools import lru_cache

import torch

from services.caption.captioning import Captioner
from services.caption.settings import CaptionSettings
from shared.jobs.tasks import SuiteJob, register_stage_tasks
from shared.models.devices import resolve_device
from shared.models.model_names import check_allowed
from shared.settings import get_infra_settings


@lru_cache(maxsize=2)
def captioner(model_id: str, device: str | None) -> Captioner:
    """One captioner per model in this worker process; it loads its weights on first use. Only a
    hub id the deployment allows: `from_pretrained` would read a folder of this worker's disk."""
    check_allowed("options.caption_model", model_id, get_infra_settings().allowed_hub_models)
    settings = CaptionSettings()
    chosen = resolve_device(device or settings.device)  # a missing GPU is named as such
    return Captioner(model_id, torch.device(chosen), cache_dir=settings.model_cache_dir)


def job_captioner(job: SuiteJob) -> Captioner:
    return captioner(job.options.caption_model, job.options.device)


TASKS = register_stage_tasks("caption", {"captioner": job_captioner})
