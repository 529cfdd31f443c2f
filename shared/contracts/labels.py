"""`labels.json` (a label per cluster) and `labelling.json` (how the labels were written, what
that cost, and their quality): written by the labelling stage, merged into hierarchy.json."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import ConfigDict, Field, RootModel, model_validator
from pydantic.json_schema import JsonDict

from shared.contracts.base import Contract, Count, Probability

LABEL_SOURCE = (
    "offline (no endpoint configured), offline-fallback (the endpoint failed; see label_warning) "
    "or llm:<model>@<prompt version>."
)


def require_difference_source(schema: JsonDict) -> None:
    """JSON Schema: a `difference_description` that is a string needs a string `difference_source`."""
    schema["if"] = {
        "properties": {"difference_description": {"type": "string"}},
        "required": ["difference_description"],
    }
    schema["then"] = {
        "required": ["difference_source"],
        "properties": {"difference_source": {"type": "string"}},
    }


def check_difference_source(description: str | None, source: str | None) -> None:
    if description is not None and source is None:
        raise ValueError("a difference_description needs its difference_source")


class ClusterLabel(Contract):
    """One cluster's label in labels.json."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=require_difference_source)

    label: str
    source: str = Field(description=LABEL_SOURCE)
    difference_description: str | None = Field(
        None, description="What the cluster has that its parent lacks; null at the top level."
    )
    model: str | None = Field(None, description="The language model that wrote the label, if one did.")
    prompt_version: str | None = None
    warning: str | None = Field(None, description="Why an offline label stands in for the model's.")
    difference_source: str | None = Field(
        None, description="Who wrote difference_description (as source); set whenever it is."
    )
    quality: float | None = Field(None, description="labelling.quality's metric; null without siblings.")

    @model_validator(mode="after")
    def _difference_has_a_source(self) -> Self:
        check_difference_source(self.difference_description, self.difference_source)
        return self


class Labels(RootModel[dict[str, ClusterLabel]]):
    """labels.json: cluster id -> its label."""


class Accounting(Contract):
    requests: Count = Field(description="HTTP requests sent, retries included.")
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count
    cache_hits: Count = Field(description="Answers taken from the response cache, no request sent.")
    retries: Count
    malformed_answers: Count
    fallbacks: Count = Field(description="Clusters labelled offline because the endpoint failed.")
    cost_usd: float | None = Field(description="From the configured prices; null when none are set.")


class LevelQuality(Contract):
    level: int = Field(ge=1)
    clusters_scored: Count
    mean: Probability | None
    median: Probability | None
    min: Probability | None


class LabelQuality(Contract):
    metric: str
    clusters_scored: Count
    mean: Probability | None
    median: Probability | None
    min: Probability | None
    per_level: list[LevelQuality]


class Labelling(Contract):
    """labelling.json, hierarchy.json's `labelling` and the job's `labelling` report: how the
    labels were written, what that cost, and how well they pick out their clusters."""

    source: Literal["llm", "offline"] = Field(description="llm when an endpoint was configured.")
    endpoint: str | None = Field(description="Base URL without credentials.")
    model: str | None
    prompt_version: str | None
    strict: bool
    labels: dict[str, Count] = Field(default_factory=dict, description="Clusters per label_source.")
    accounting: Accounting
    quality: LabelQuality | None = None
    warnings: list[str] = Field(default_factory=list)

    @classmethod
    def offline(cls, strict: bool = False) -> Labelling:
        """Offline labels, nothing spent (also what a job from before labelling.json reports)."""
        zero = dict.fromkeys(Accounting.model_fields, 0) | {"cost_usd": None}
        return cls(
            source="offline",
            endpoint=None,
            model=None,
            prompt_version=None,
            strict=strict,
            accounting=Accounting.model_validate(zero),
        )
