"""`comparison.json`: what changed between two models run on the same images (issue 27), written
by `neuron-atlas compare A_OUT B_OUT --out DIR`. Its published JSON Schema is generated from
`Comparison` (`python -m shared.contracts.schema`); docs/comparison.md says what each number means.

Concepts come from captions, not from the model, so two results over the same images share one
concept tree: a comparison is per concept (cluster id), and, where the two models have the same
layers, per neuron (layer, channel), which then correspond by index.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from neuron_atlas_client.contracts.base import Contract, Count, Probability, omitted_when_none
from neuron_atlas_client.contracts.uncertainty import Interval, TestStatus

COMPARISON_SCHEMA_VERSION = "1.0"

ConceptStatus = Literal["unchanged", "changed", "vanished", "appeared", "no_group", "in_both"]

KEPT_SHARE = (
    "The top-line number a CI gate reads. Share of A's group that B keeps: 1 - (neurons of A's "
    "group that are not in B's group and whose support fell significantly, BH q <= alpha) / (A's "
    "group size). 1: B loses nothing of A's group beyond what same-model noise explains; 0: all "
    "of it is gone. Null when A has no group, or the models have different layers."
)


class ModelRecord(Contract):
    """One of the two results compared."""

    source: str = Field(description="The result folder or job id it was read from.")
    architecture: str
    weights: str = Field(description="Where the weights came from, in plain words.")
    sha256: str | None = omitted_when_none("sha256 of the weights file, where one was given.")
    model_id: str | None = omitted_when_none("The registered model, where the job named one.")
    layers: list[str] = Field(description="The layers read, in neuron-axis order.")
    created_at: str = Field(description="When its hierarchy.json was written.")


class CausalEffect(Contract):
    """The concept's specificity test in one model (hierarchy.json's cluster
    uncertainty.specificity), copied as it is: "not tested" stays "not tested"."""

    status: TestStatus | Literal["no_uncertainty"] = Field(
        description="The test's status in that model; no_uncertainty: its result has no uncertainty stage."
    )
    note: str
    effect: float | None = Field(
        None, description="test_drop - reference_drop (top-logit units); null unless tested."
    )
    interval: Interval | None = None
    q_value: Probability | None = None
    significant: bool | None = None


class ConceptSide(Contract):
    """One model's view of a concept."""

    group_size: Count
    selectivity: float | None = Field(
        description="Mean over the group of each neuron's support in the concept minus its active "
        "rate in the rest of the collection (a risk difference, -1..1); null without a group or "
        "when the concept holds every image."
    )
    group_stability: Probability | None = Field(
        description="The group's bootstrap stability (mean Jaccard) in that model's evidence."
    )
    causal: CausalEffect


class NeuronChange(Contract):
    """One tested neuron of a concept (its mean support over the two models is at least
    min_support / 2, which holds both groups): its support and selectivity in each model, and
    the paired tests of their change (null: both models behave the same on every image)."""

    layer: str
    channel: int = Field(ge=0)
    in_a: bool = Field(description="In the concept's group in A.")
    in_b: bool
    support_a: Probability = Field(description="Share of the concept's images in which it is active in A.")
    support_b: Probability
    support_change: float = Field(description="support_b - support_a.")
    a_only: Count = Field(description="Concept images where it is active in A and not in B.")
    b_only: Count = Field(description="Concept images where it is active in B and not in A.")
    support_p: Probability = Field(
        description="Two-sided exact sign-flip (McNemar) mid-p value of support_change: under the "
        "null each image's pair of activities is as likely swapped, so b_only given the "
        "discordant images is Binomial(a_only + b_only, 1/2). 1 without discordant images."
    )
    support_q: Probability = Field(description="Benjamini-Hochberg over every support_p of the comparison.")
    selectivity_a: float | None = Field(
        description="Support minus the active rate in the rest of the collection, in A; null when "
        "the concept holds every image."
    )
    selectivity_b: float | None
    selectivity_change: float | None = Field(description="selectivity_b - selectivity_a.")
    selectivity_p: Probability | None = Field(
        description="Two-sided exact sign-flip mid-p value of selectivity_change, every image's "
        "pair of activities swapped or not at random (the concept's and the rest's discordant "
        "images as two independent binomials)."
    )
    selectivity_q: Probability | None = Field(
        description="Benjamini-Hochberg over every selectivity_p of the comparison."
    )
    significant: bool = Field(description="support_q <= alpha: its support changed beyond noise.")


class NeuronRef(Contract):
    layer: str
    channel: int = Field(ge=0)


class ConceptLayer(Contract):
    """A concept's groups in one layer."""

    layer: str
    group_a: Count
    group_b: Count
    gained: Count = Field(description="In B's group and not in A's.")
    lost: Count = Field(description="In A's group and not in B's.")
    jaccard: Probability | None = Field(
        description="|A ∩ B| / |A ∪ B| of the layer's groups; null when both are empty."
    )
    significant_up: Count = Field(
        description="Neurons whose support rose significantly (support_q <= alpha)."
    )
    significant_down: Count


class ConceptComparison(Contract):
    """One concept (cluster) of the shared concept tree, in both models."""

    id: str
    level: int = Field(ge=1)
    label: str = Field(
        description="A's label (the concepts are the same; their labels may be worded differently)."
    )
    size: int = Field(ge=1, description="Images of the concept.")
    status: ConceptStatus = Field(
        description="Same layers: unchanged (no support changed significantly), changed (some did), "
        "vanished (A has a group, B none), appeared (B has one, A none), no_group (neither). "
        "Different layers: vanished, appeared, no_group or in_both."
    )
    kept_share: Probability | None = Field(description=KEPT_SHARE)
    testable: bool | None = Field(
        description="Whether a support change could reach alpha with this concept's images "
        "(a 4-image concept cannot: its smallest two-sided mid-p is 1/16); null for different layers."
    )
    a: ConceptSide
    b: ConceptSide
    jaccard: Probability | None = Field(
        None, description="Jaccard index of the two groups; null when both are empty or the layers differ."
    )
    gained: list[NeuronRef] | None = omitted_when_none("In B's group and not in A's (same layers).")
    lost: list[NeuronRef] | None = omitted_when_none("In A's group and not in B's (same layers).")
    causal_change: float | None = Field(
        description="b.causal.effect - a.causal.effect, where both models tested the concept."
    )
    layers: list[ConceptLayer] | None = omitted_when_none("Per layer (same layers).")
    neurons: list[NeuronChange] | None = omitted_when_none(
        "The tested neurons (both groups, and every neuron whose mean support over the two models is "
        "at least min_support / 2), each one's change (same layers)."
    )


class LayerSummary(Contract):
    """One layer over every concept (same layers)."""

    layer: str
    memberships_a: Count = Field(description="(concept, neuron) memberships in A's groups.")
    memberships_b: Count
    gained: Count
    lost: Count
    significant_up: Count
    significant_down: Count
    mean_jaccard: Probability | None = Field(
        description="Mean over the concepts with a group in this layer in either model."
    )


class ComparisonMethod(Contract):
    alpha: float
    mode: Literal["same_layers", "different_layers"] = Field(
        description="same_layers: the two models read the same layers with the same channels, so "
        "neurons correspond by index; different_layers: concepts side by side only."
    )
    mode_reason: str
    null: str
    support_test: str
    selectivity_test: str
    multiple_testing: str
    kept_share: str


class ComparisonSummary(Contract):
    concepts: Count
    unchanged: Count
    changed: Count
    vanished: list[str] = Field(description="Concepts with a group in A and none in B.")
    appeared: list[str] = Field(description="Concepts with a group in B and none in A.")
    tests: Count = Field(description="(concept, neuron) pairs tested (support).")
    significant_changes: Count = Field(description="Pairs whose support changed significantly.")
    min_kept_share: Probability | None = Field(description="The lowest kept_share of any concept.")
    mean_jaccard: Probability | None = Field(
        description="Mean group Jaccard over concepts with a group in either model."
    )


class Comparison(Contract):
    """Two models' results over the same images, concept by concept."""

    model_config = ConfigDict(
        extra="forbid",
        title="Neuron Atlas comparison",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://neuron-atlas.dev/schemas/comparison-{COMPARISON_SCHEMA_VERSION}.json",
        },
    )
    schema_version: Literal["1.0"]
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    generator: str = Field(description="neuron-atlas and its version.")
    a: ModelRecord = Field(description="The reference model (e.g. the one in production).")
    b: ModelRecord = Field(description="The candidate.")
    images: Count = Field(description="Images both results hold (matched by the sha256 of their bytes).")
    method: ComparisonMethod
    summary: ComparisonSummary
    layers: list[LayerSummary] | None = omitted_when_none("Per layer (same layers).")
    concepts: list[ConceptComparison]


class ComparisonRequest(Contract):
    """`POST /v1/comparisons`: two finished jobs of the caller over the same images."""

    a: str = Field(pattern="^[0-9a-zA-Z]{32}$", description="The reference job's id.")
    b: str = Field(pattern="^[0-9a-zA-Z]{32}$", description="The candidate job's id.")
    alpha: float | None = Field(
        None, gt=0.0, lt=1.0, description="Test level; default: the reference job's alpha."
    )


class ComparisonPublic(Contract):
    """A comparison the gateway keeps: its id, the two jobs, and its summary; the whole
    comparison.json is at `GET /v1/comparisons/{id}/comparison`."""

    id: str
    a: str
    b: str
    mode: Literal["same_layers", "different_layers"]
    summary: ComparisonSummary
