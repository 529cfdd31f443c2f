"""`uncertainty.json`: the evidence for every membership, cluster and the job (design §1 step 8),
written by the uncertainty stage; hierarchy.json carries it per neuron, cluster and job."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.contracts.base import Contract, Count, Probability

Interval = Annotated[list[float], Field(min_length=2, max_length=2)]  # [lower, upper]


class MemberStats(Contract):
    """A cluster's group members, one entry per member in every list (columns of a table).

    p_value/q_value/significant: selectivity (one-sided Fisher test of the cluster against the rest
    of the collection, BH across the cluster's neurons). chance_*: the binomial test against the
    chance rate. expected_support*: under model uncertainty (dropout passes); augmented_support*:
    under test-time augmentation (input sensitivity)."""

    neuron: list[int]
    count: list[Count]
    lower: list[float]
    upper: list[float]
    p_value: list[float]
    q_value: list[float]
    significant: list[bool]
    chance_p_value: list[float]
    chance_q_value: list[float]
    above_chance: list[bool]
    collection_rate: list[float]
    generic: list[bool]
    reliable: list[bool]
    inclusion_probability: list[float] | None
    expected_support: list[float] | None
    expected_support_sd: list[float] | None
    augmented_support: list[float] | None = None
    augmented_support_sd: list[float] | None = None


class PredictiveEntropy(Contract):
    """Entropy of the mean predicted class distribution over the dropout passes (nats), split as
    total = aleatoric (expected entropy of each pass) + epistemic (mutual information)."""

    total: float = Field(ge=0)
    aleatoric: float = Field(ge=0)
    epistemic: float = Field(ge=0)


class ImageEntropy(Contract):
    """Per image (in the order of hierarchy.json's images), columns of PredictiveEntropy."""

    total: list[float]
    aleatoric: list[float]
    epistemic: list[float]


class KeepOnly(Contract):
    """Every selected neuron but the group ablated; effect = random keep-only drop minus the group's."""

    group_drop: float
    random_drop_mean: float
    effect: float
    interval: Interval | None
    p_value: Probability
    q_value: Probability | None = Field(
        None, description="Benjamini-Hochberg across the job's causal checks."
    )
    significant: bool = Field(description="q_value <= alpha (p_value <= alpha where q_value is null).")


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
    q_value: Probability | None = Field(
        None, description="Benjamini-Hochberg across the job's causal checks."
    )
    significant: bool = Field(description="q_value <= alpha (p_value <= alpha where q_value is null).")
    keep_only: KeepOnly


class DifferenceTest(Contract):
    """Hypergeometric test that the child's images carry its difference neurons more often than
    its siblings' images."""

    child_carrier_share: Probability
    sibling_carrier_share: Probability | None
    p_value: Probability
    q_value: Probability | None = Field(
        None, description="Benjamini-Hochberg across the job's difference tests."
    )
    significant: bool = Field(description="q_value <= alpha (p_value <= alpha where q_value is null).")


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
    predictive_entropy: PredictiveEntropy | None = Field(
        None, description="Mean over the cluster's images; null without dropout passes."
    )


class ModelUncertaintyMethod(Contract):
    """Model (epistemic) uncertainty from dropout passes: the model's own dropout (mc_dropout), or
    dropout injected before each read layer at `dropout_rate` (injected_dropout)."""

    method: Literal["mc_dropout", "injected_dropout"]
    samples: int = Field(ge=1)
    dropout_rate: float | None = Field(description="The injected rate; null for the model's own dropout.")


class InputSensitivityMethod(Contract):
    """Test-time augmentation: how the active sets move under flips, crops and colour jitter."""

    method: Literal["tta"]
    samples: int = Field(ge=1)


class CausalMethod(Contract):
    random_sets: int
    max_images: int
    test: str = Field(description="How p_value is computed; its smallest value is 1 / (random_sets + 1).")
    output: str


class UncertaintyMethod(Contract):
    alpha: float
    interval: Literal["wilson", "clopper_pearson"]
    test: str
    multiple_testing: str
    chance_rate: dict[str, Probability] = Field(description="Per layer: the share of it active by chance.")
    bootstrap_resamples: Count
    bootstrap: str
    selectivity_test: str
    chance_test: str
    generic: str
    model_uncertainty: ModelUncertaintyMethod | None
    input_sensitivity: InputSensitivityMethod | None
    causal: CausalMethod | None
    pass_precision: Literal["float32", "bfloat16"] | None = Field(
        None,
        description="Number format of the model passes above (option pass_precision); the "
        "activation pass that defines the groups is float32. Null when none ran.",
    )
    seed: int


class UncertaintySummary(Contract):
    """The job's `uncertainty` report."""

    memberships: Count
    reliable_share: Probability | None
    significant_share: Probability | None = Field(description="Share of memberships that are selective.")
    above_chance_share: Probability | None
    generic_neurons: Count = Field(description="Neurons active in >= min_support of all images.")
    generic_memberships: Count
    mean_stability: Probability | None
    clusters_checked: Count
    clusters_with_causal_effect: Count
    difference_tests: Count
    difference_tests_significant: Count


class OutputChange(Contract):
    top1_agreement: Probability = Field(description="Share of images whose top class is unchanged.")
    mean_abs_logit_change: float = Field(ge=0)
    top_logit_drop: float
    top1_accuracy: Probability | None = Field(
        None, description="Top-1 accuracy on the labelled images; null without labels."
    )


class PruningPoint(Contract):
    """One point of the pruning curve: the neurons in no membership selective at `q_threshold`
    zeroed, next to random prunings of as many neurons per layer (drawn from the whole layer)."""

    q_threshold: Probability
    neurons_pruned: Count
    share_pruned: Probability
    pruned: OutputChange | None
    random: list[OutputChange]


class Pruning(Contract):
    """Significance pruning (Jo, Jun & Park 2020) at alpha, and its curve over `q_threshold`."""

    neurons_pruned: Count
    share_pruned: Probability
    images: Count
    pruned: OutputChange | None
    random: list[OutputChange]
    labelled_images: Count = Field(0, description="Images with a class label (top1_accuracy).")
    unpruned_top1_accuracy: Probability | None = None
    curve: list[PruningPoint] = Field(default_factory=list)


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
    image_entropy: ImageEntropy | None = None

    def job(self) -> JobUncertainty:
        return JobUncertainty(method=self.method, summary=self.summary, pruning=self.pruning)
