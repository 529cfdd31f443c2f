"""`hierarchy.json`, the result of a job, and its parts; the API answers with them too
(`/hierarchy`, `/clusters/{id}`, `/neurons/...`). Its published JSON Schema is generated from
`Hierarchy` (`python -m shared.contracts.schema`)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import ConfigDict, Field, model_validator

from neuron_atlas_client.contracts.base import Contract, Count, Probability, omitted_when_none
from neuron_atlas_client.contracts.groups import Layer
from neuron_atlas_client.contracts.input_check import RunWarning
from neuron_atlas_client.contracts.labels import (
    DIFFERENCE_SOURCE_PATTERN,
    LABEL_SOURCE,
    Labelling,
    check_difference_source,
    require_difference_source,
)
from neuron_atlas_client.contracts.models import Preprocessing, WeightsSource
from neuron_atlas_client.contracts.uncertainty import (
    ClusterModelUncertainty,
    DifferenceTest,
    Evidence,
    Importance,
    JobUncertainty,
    Specificity,
)
from neuron_atlas_client.options import PipelineOptions

SCHEMA_VERSION = "2.0"


class Generator(Contract):
    name: str
    version: str


class CaptionerRecord(Contract):
    id: str
    images_captioned: Count = Field(
        description="Images captioned by the model; the rest brought their own captions."
    )


class EmbedderRecord(Contract):
    """embedder.json: which sentence embedder made embeddings.npy."""

    id: str
    source: str
    dimension: int = Field(ge=1)


class TargetRecord(Contract):
    """The model explained (schema 1.4 added everything after `weights`)."""

    architecture: str = Field(description="`NAME` (torchvision) or `timm:NAME`.")
    weights: str = Field(description="Where the weights came from, in plain words.")
    source: WeightsSource | None = omitted_when_none(
        "upload, bucket, mlflow or hub (a registered model); file (--weights); imagenet; random."
    )
    model_id: str | None = omitted_when_none("The registered model (POST /v1/models).")
    sha256: str | None = omitted_when_none("sha256 of the weights file, where one was given.")
    num_classes: int | None = omitted_when_none("Outputs of the classifier head.")
    preprocessing: Preprocessing | None = omitted_when_none("The evaluation transform used.")


class ModelsUsed(Contract):
    captioner: CaptionerRecord
    embedder: EmbedderRecord
    target: TargetRecord


class ImageModelUncertaintyRecord(Contract):
    total: float = Field(ge=0)
    expected_entropy: float = Field(ge=0)
    mutual_information: float = Field(ge=0)


class ImageRecord(Contract):
    id: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 of the file's bytes.")
    file_name: str
    caption: str
    caption_source: Literal["provided", "model"]
    label: str | None = omitted_when_none("The class label its submission gave (metadata `label`).")
    model_uncertainty: ImageModelUncertaintyRecord | None = omitted_when_none(
        "Predictive entropy of the dropout passes, where the image was in their sample: total = "
        "expected_entropy + mutual_information (read it as uncertainty.method.model_uncertainty "
        "says)."
    )


class SkippedFile(Contract):
    file_name: str
    reason: str


class LevelSize(Contract):
    level: int = Field(ge=1)
    clusters: int = Field(ge=1)


class Neuron(Contract):
    layer: str
    channel: int = Field(ge=0)
    support: Probability = Field(description="Share of the cluster's images in which the neuron is active.")
    evidence: Evidence | None = omitted_when_none("Present when the uncertainty stage ran.")


class ClusterUncertainty(Contract):
    """The cluster's evidence beyond its memberships (uncertainty.json's cluster, less its
    members, which each neuron carries as `evidence`)."""

    group_stability: Probability | None = Field(
        description="Mean Jaccard index of the group recomputed on bootstrap resamples of the "
        "cluster's images with the group (the clustering held fixed)."
    )
    clustering_stability: Probability | None = Field(
        None,
        description="Mean Jaccard index of the cluster with its best-matching cluster when FINCH "
        "runs again on subsamples of the captions.",
    )
    specificity: Specificity
    importance: Importance
    difference_test: DifferenceTest | None = Field(description="Null at the top level.")
    model_uncertainty: ClusterModelUncertainty | None = None


class Cluster(Contract):
    """One cluster of the hierarchy: label, images, neuron group, difference neurons, evidence."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=require_difference_source)
    id: str
    level: int = Field(ge=1, description="1 is the finest level.")
    parent: str | None
    children: list[str]
    size: int = Field(ge=1)
    images: list[str] = Field(min_length=1)
    label: str
    label_source: str = Field(description=LABEL_SOURCE)
    label_model: str | None = Field(description="The language model that wrote the label.")
    label_prompt_version: str | None
    label_warning: str | None = Field(description="Why an offline label stands in for the model's.")
    label_quality: Probability | None = Field(
        description="AUROC of the label embedding's similarity to member captions against sibling "
        "clusters' captions; null without siblings."
    )
    neurons: list[Neuron]
    difference_neurons: list[Neuron] = Field(description="In this cluster's group and not in its parent's.")
    difference_description: str | None
    difference_source: str | None = Field(
        pattern=DIFFERENCE_SOURCE_PATTERN,
        description="Who wrote difference_description: offline, offline-fallback or "
        "llm:<model>@<prompt version>. Set exactly when difference_description is.",
    )
    uncertainty: ClusterUncertainty | None = omitted_when_none("Present when the uncertainty stage ran.")

    @model_validator(mode="after")
    def _difference_has_a_source(self) -> Self:
        check_difference_source(self.difference_description, self.difference_source)
        return self


class Hierarchy(Contract):
    """A hierarchy of image clusters, each with a label and the group of target-model neurons its
    images activate in common."""

    model_config = ConfigDict(
        extra="forbid",
        title="Neuron Atlas hierarchy",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://neuron-atlas.dev/schemas/hierarchy-{SCHEMA_VERSION}.json",
        },
    )
    schema_version: Literal["2.0"]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    generator: Generator
    options: PipelineOptions = Field(description="Every option of the job, defaults resolved.")
    models: ModelsUsed
    layers: list[Layer]
    images: list[ImageRecord]
    skipped: list[SkippedFile] = Field(description="Files that were not used, each with the reason.")
    labelling: Labelling
    levels: list[LevelSize]
    clusters: list[Cluster]
    uncertainty: JobUncertainty | None = omitted_when_none(
        "Present when the uncertainty stage ran (docs/uncertainty.md)."
    )
    warnings: list[RunWarning] | None = omitted_when_none(
        "Schema 1.5: what makes this result doubtful, each with what to do; present when there is "
        "any. E.g. images with class labels that the target model gets near chance with the "
        "input transform used, where another input size gives far more (kind input-size)."
    )
