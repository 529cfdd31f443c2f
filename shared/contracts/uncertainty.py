"""`uncertainty.json`: the evidence for every membership, cluster and the job (design §1 step 8),
written by the uncertainty stage; hierarchy.json carries it per neuron, cluster and job."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.contracts.base import Contract, Count, Probability

Interval = Annotated[list[float], Field(min_length=2, max_length=2)]  # [lower, upper]


class MemberStats(Contract):
    """A cluster's group members, one entry per member in every list (columns of a table)."""

    neuron: list[int]
    count: list[Count]
    lower: list[float]
    upper: list[float]
    p_value: list[float]
    q_value: list[float]
    significant: list[bool]
    reliable: list[bool]
    inclusion_probability: list[float] | None
    expected_support: list[float] | None
    expected_support_sd: list[float] | None


class KeepOnly(Contract):
    """Every selected neuron but the group ablated; effect = random keep-only drop minus the group's."""

    group_drop: float
    random_drop_mean: float
    effect: float
    interval: Interval | None
    p_value: Probability
    significant: bool


class CausalCheck(Contract):
    """Ablation of the cluster's group on its images vs size-matched random neuron sets: drops of
    the logit of each image's unablated top class."""

    images: int = Field(ge=1)
    random_sets: int = Field(ge=1)
    group_drop: float
    random_drop_mean: float
    random_drop_sd: float
    effect: float = Field(description="Group drop minus the random sets' mean drop (paired per image).")
    interval: Interval | None
    p_value: Probability
    significant: bool
    keep_only: KeepOnly


class DifferenceTest(Contract):
    """Hypergeometric test that the child's images carry its difference neurons more often than
    its siblings' images."""

    child_carrier_share: Probability
    sibling_carrier_share: Probability | None
    p_value: Probability
    significant: bool


class ClusterStats(Contract):
    """One cluster of uncertainty.json."""

    size: int = Field(ge=1)
    members: MemberStats
    stability: Probability | None = Field(
        description="Mean Jaccard index of bootstrap groups with the group."
    )
    causal: CausalCheck | None = Field(description="Null when not run or the group is empty.")
    difference_test: DifferenceTest | None = Field(
        description="Null at the top level or without difference neurons."
    )


class ModelUncertaintyMethod(Contract):
    method: Literal["mc_dropout", "tta"]
    samples: int = Field(ge=1)


class CausalMethod(Contract):
    random_sets: int
    max_images: int
    permutations: int
    output: str


class UncertaintyMethod(Contract):
    alpha: float
    interval: Literal["wilson", "clopper_pearson"]
    test: str
    multiple_testing: str
    chance_rate: dict[str, Probability] = Field(description="Per layer: the share of it active by chance.")
    bootstrap_resamples: Count
    bootstrap: str
    model_uncertainty: ModelUncertaintyMethod | None
    causal: CausalMethod | None
    seed: int


class UncertaintySummary(Contract):
    """The job's `uncertainty` report."""

    memberships: Count
    reliable_share: Probability | None
    significant_share: Probability | None
    mean_stability: Probability | None
    clusters_checked: Count
    clusters_with_causal_effect: Count
    difference_tests: Count
    difference_tests_significant: Count


class OutputChange(Contract):
    top1_agreement: Probability
    mean_abs_logit_change: float = Field(ge=0)
    top_logit_drop: float


class Pruning(Contract):
    """Significance pruning: neurons in no significant membership zeroed on the whole collection,
    next to as many random neurons per layer."""

    neurons_pruned: Count
    share_pruned: Probability
    images: Count
    pruned: OutputChange | None
    random: list[OutputChange]


class JobUncertainty(Contract):
    """hierarchy.json's `uncertainty`: how the evidence was computed, and its summary."""

    method: UncertaintyMethod
    summary: UncertaintySummary
    pruning: Pruning | None


class Uncertainty(Contract):
    """uncertainty.json."""

    method: UncertaintyMethod
    clusters: dict[str, ClusterStats]
    summary: UncertaintySummary
    pruning: Pruning | None

    def job(self) -> JobUncertainty:
        return JobUncertainty(method=self.method, summary=self.summary, pruning=self.pruning)
