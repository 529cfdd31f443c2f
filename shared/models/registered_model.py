"""Registered models (POST /v1/models) as the suite stores them, and a worker's local copy of
their weights.

Objects: `models/{tenant}/{id}/model.json` (the ModelRecord), `.../layers.json` (readable layers)
and `.../weights.safetensors`. A job that names `model_id` gets the record and the weights' key
copied into its own `registered_model.json` at submission, so a worker never needs the tenant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from neuron_atlas_client.contracts.models import ModelRecord
from neuron_atlas_client.errors import ModelLoadError
from shared.models.safetensors_file import file_sha256
from shared.storage.stores import S3Store, Store, get_json

JOB_ARTIFACT = "registered_model.json"
KEEP_FILES = 4  # weights files a worker keeps on disk; the least recently used go first
MODEL_RECORD, MODEL_LAYERS, MODEL_WEIGHTS = "model.json", "layers.json", "weights.safetensors"


def model_prefix(tenant: str, model_id: str) -> str:
    return f"models/{tenant}/{model_id}/"


def tenant_models_prefix(tenant: str) -> str:
    return f"models/{tenant}/"


@dataclass(frozen=True)
class RegisteredWeights:
    """A registered model's record and the local copy of its weights file."""

    record: ModelRecord
    path: Path


class JobModel(BaseModel):
    """A job's copy of its registered model: the record and where the weights are."""

    record: ModelRecord
    weights_key: str


def job_model(job_store: Store) -> JobModel | None:
    if not job_store.exists(JOB_ARTIFACT):
        return None
    document: Any = get_json(job_store, JOB_ARTIFACT)
    return JobModel.model_validate(document)


def local_weights(store: S3Store, model: JobModel, cache_dir: Path) -> Path:
    """The weights on this worker's disk, fetched once: the file is named by its sha256, so a
    copy that is there is the right one; a fetched copy is checked before it is used."""
    path = cache_dir / f"{model.record.sha256}.safetensors"
    if path.is_file():
        os.utime(path)  # recently used: kept longest
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    try:
        store.get_file(model.weights_key, partial)
    except FileNotFoundError:
        raise ModelLoadError(
            f"The weights of model {model.record.id} are gone from object storage.",
            "The model was deleted after the job was submitted: register it again and resubmit.",
        ) from None
    if file_sha256(partial) != model.record.sha256:
        partial.unlink(missing_ok=True)
        raise ModelLoadError(
            f"The stored weights of model {model.record.id} do not match their sha256.",
            "Register the model again.",
        )
    partial.replace(path)  # atomic: another process sees the whole file or none
    _evict(cache_dir, keep=path)
    return path


def _evict(folder: Path, keep: Path) -> None:
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [f for f in files if f != keep][KEEP_FILES - 1 :]:
        old.unlink(missing_ok=True)  # a process that has it open keeps reading it
