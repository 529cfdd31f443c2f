"""`labels.json` (a label per cluster) and `labelling.json` (how the labels were written, what
that cost, and their quality): written by the labelling stage, merged into hierarchy.json."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, RootModel, model_validator
from pydantic.json_schema import JsonDict

from neuron_atlas_client.contracts.base import Contract, Count, Probability

LABEL_SOURCE = (
    "offline (no endpoint configured), offline-fallback (the endpoint failed; see label_warning) "
    "or llm:<model>@<prompt version>."
)


def require_difference_source(schema: JsonDict) -> None:
    """JSON Schema: `difference_source` is a string exactly when `difference_description` is."""
    schema["if"] = {
        "properties": {"difference_description": {"type": "string"}},
        "required": ["difference_description"],
    }
    schema["then"] = {
        "required": ["difference_source"],
        "properties": {"difference_source": {"type": "string"}},
    }
    schema["else"] = {"properties": {"difference_source": {"type": "null"}}}


def check_difference_source(description: str | None, source: str | None) -> None:
    # A description without its author would be a claim nobody can weigh (schema rule too).
    if (description is None) != (source is None):
        raise ValueError(
            "difference_source must be set exactly when difference_description is: "
            f"{description!r} from {source!r}"
        )


DIFFERENCE_SOURCE_PATTERN = "^(offline|offline-fallback|llm:.+@.+)$"


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
        None,
        pattern=DIFFERENCE_SOURCE_PATTERN,
        description="Who wrote difference_description (as source); set exactly when it is.",
    )
    quality: float | None = Field(None, description="labelling.quality's metric; null without siblings.")

    @model_validator(mode="after")
    def _difference_has_a_source(self) -> Self:
        check_difference_source(self.difference_description, self.difference_source)
        return self


class Labels(RootModel[dict[str, ClusterLabel]]):
    """labels.json: cluster id -> its label."""

    @classmethod
    def stored(cls, document: dict[str, dict[str, Any]]) -> Labels:
        """labels.json as stored; one written before difference sources were recorded for
        offline descriptions (before schema 1.2) gets the label's own source."""
        upgraded = {
            cluster: {**label, "difference_source": label.get("difference_source") or label["source"]}
            if label.get("difference_description") is not None
            else label
            for cluster, label in document.items()
        }
        return cls.model_validate(upgraded)


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
