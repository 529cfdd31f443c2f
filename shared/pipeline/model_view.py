"""One job, several target models (issue 27; docs/architecture.md, 'One job, several models').

A per-model stage of the table (`Stage.per_model`) runs once per model of a multi-model job, each
time over that model's view of the job, `ModelJob`: its store writes under `models/{key}/` and
reads there first, then at the job's root (so the shared artifacts are found); its options are the
job's with that model's fields; `resource("target")` is that model. Both runners go through
`stage_jobs`, so they iterate the models alike. A job of one model gets the job itself: its layout
is the single-model one, with no prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from neuron_atlas_client.contracts.input_check import RunWarning
from neuron_atlas_client.options import PipelineOptions, TargetModel
from shared.pipeline.ingest import DecodedShard
from shared.pipeline.progress import Progress
from shared.pipeline.stage_job import ShardDecoder, StageJob
from shared.pipeline.stages import Stage
from shared.storage import artifacts
from shared.storage.stores import ModelStore, Store, put_json

# Written at the job's root by every model alike: which images decode is decided by decoding,
# not by a model, and the embedding stage after the activation shards reads it there.
SHARED_PREFIXES = ("undecodable/", "thumbs/")
# The resources a model's view gets for its own model; the others are the job's.
MODEL_RESOURCES = frozenset({"target"})

# `make(name, view)`: the runner's resource `name` for the model of `view` (loaded once per model).
ModelResource = Callable[[str, "ModelJob"], Any]


class ModelJob:
    """One model's `StageJob` within a multi-model job; everything but the store, the options and
    the target model is the job's."""

    def __init__(
        self, job: StageJob, model: TargetModel, make: ModelResource, baseline: bool = False
    ) -> None:
        self.job, self.model, self.key, self.baseline = job, model, model.resolved_key, baseline
        self.options: PipelineOptions = job.options.for_model(model)
        self.store: Store = model_store(job.store, self.key)
        self._make = make

    @property
    def progress(self) -> Progress:
        return self.job.progress

    def manifest(self) -> dict[str, Any]:
        return self.job.manifest()

    def read_image(self, entry: dict[str, Any]) -> bytes:
        return self.job.read_image(entry)

    def shard(self, index: int, decoder: ShardDecoder) -> DecodedShard:
        return self.job.shard(index, decoder)

    def resource(self, name: str) -> Any:
        return self._make(name, self) if name in MODEL_RESOURCES else self.job.resource(name)

    def report(self, name: str, document: dict[str, Any]) -> None:
        # The baseline's summary is the job's (GET /v1/jobs/{id} shows it); the others' beside it.
        self.job.report(name if self.baseline else f"{name}:{self.key}", document)

    def warn(self, warnings: Sequence[RunWarning]) -> None:
        self.job.warn([w.model_copy(update={"message": f"model {self.key}: {w.message}"}) for w in warnings])

    def count_undecodable(self, shard: int, count: int) -> None:
        self.job.count_undecodable(shard, count)  # per shard, idempotent: every model counts alike


def model_store(store: Store, key: str) -> Store:
    """Model `key`'s view of a multi-model job's store: its folder, then the job's root."""
    return ModelStore(store, artifacts.model_prefix(key), SHARED_PREFIXES)


def model_jobs(job: StageJob, make: ModelResource) -> list[ModelJob]:
    """A view per target model of a multi-model job, the baseline first."""
    return [ModelJob(job, model, make, i == 0) for i, model in enumerate(job.options.target_models())]


def stage_jobs(stage: Stage, job: StageJob, make: ModelResource) -> Sequence[StageJob]:
    """What a stage's entry runs over: the job, or, for a per-model stage of a multi-model job,
    each model's view of it in turn."""
    if stage.per_model and job.options.multi_model:
        return model_jobs(job, make)
    return [job]


def write_model_specs(store: Store, options: PipelineOptions) -> None:
    """Each model's spec.json under its folder (at ingest), so that folder and the job's root read
    as that model's single-model result."""
    for model in options.target_models():
        put_json(
            store,
            artifacts.model_prefix(model.resolved_key) + artifacts.SPEC,
            {"options": options.for_model(model).model_dump(mode="json")},
        )
