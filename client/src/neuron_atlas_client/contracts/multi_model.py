"""`models.json`: a multi-model job's result (issue 27, 'One job, several models'): one concept
tree, shared by every model because concepts come from captions, with a section per model per
concept. Each model's own `models/{key}/hierarchy.json` stays a complete single-model result, and
`comparisons/{key}.json` compares the baseline (the first model) with model `key`. Its published
JSON Schema is generated from `MultiModelResult` (`python -m shared.contracts.schema`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from neuron_atlas_client.contracts.base import Contract, Count, Probability, omitted_when_none
from neuron_atlas_client.contracts.comparison import CausalEffect

MULTI_MODEL_SCHEMA_VERSION = "1.0"


class ModelSection(Contract):
    """One target model of the job."""

    key: str = Field(description="The model's name in the job: its folder `models/{key}/`.")
    architecture: str
    weights: str = Field(description="Where the weights came from, in plain words.")
    model_id: str | None = omitted_when_none("The registered model, where the job named one.")
    layers: list[str] = Field(description="The layers read, in neuron-axis order.")
    hierarchy: str = Field(description="Its single-model hierarchy.json, relative to the result.")
    comparison: str | None = Field(
        description="Its comparison.json against the baseline, relative to the result; null for the baseline."
    )


class GroupNeuron(Contract):
    layer: str
    channel: Count
    support: Probability = Field(description="Share of the concept's images in which it is active.")


class ConceptInModel(Contract):
    """A concept as one model sees it: its group and the key evidence (the model's
    hierarchy.json has all of it)."""

    group_size: Count
    neurons: list[GroupNeuron]
    group_stability: Probability | None = Field(
        description="Bootstrap share of resamples that keep the group; null without the uncertainty stage."
    )
    causal: CausalEffect = Field(description="The concept's specificity test in this model.")


class ConceptAcrossModels(Contract):
    """One concept of the shared tree, with each model's group."""

    id: str
    level: int = Field(ge=1, description="1 is the finest level.")
    parent: str | None
    children: list[str]
    size: int = Field(ge=1, description="Images in the concept.")
    label: str
    models: dict[str, ConceptInModel] = Field(description="By model key, the baseline first.")


class CostNote(Contract):
    """What the job computed once for all its models, and what once per model."""

    once: list[str] = Field(description="Stages run once for every model (captions, clusters, labels).")
    per_model: list[str] = Field(description="Stages run once per model.")
    note: str


class MultiModelResult(Contract):
    """A job of several target models over the same images."""

    model_config = ConfigDict(
        extra="forbid",
        ser_json_inf_nan="constants",
        title="Neuron Atlas multi-model result",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://neuron-atlas.dev/schemas/models-{MULTI_MODEL_SCHEMA_VERSION}.json",
        },
    )
    schema_version: Literal["1.0"]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    generator: str
    baseline: str = Field(description="The key of the first model, which the others are compared with.")
    models: list[ModelSection]
    cost: CostNote
    concepts: list[ConceptAcrossModels]
