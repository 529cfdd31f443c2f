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
    """How far a pruned model's outputs moved from the unpruned model's, on the held-out images."""

    top1_agreement: Probability = Field(description="Share of images whose top class is unchanged.")
    mean_abs_logit_change: float = Field(ge=0)
    top_logit_drop: float = Field(description="Mean drop of the logit of each image's unpruned top class.")
    top1_accuracy: Probability | None = Field(
        None, description="Top-1 accuracy on the labelled held-out images; null without labels."
    )


class RandomPrunings(Contract):
    """Uniform random prunings of as many neurons per layer as significance pruning (each drawn
    from the whole layer): every output's mean over the sets, and its 95% percentile interval
    (the 2.5th and 97.5th percentiles of the sets, linearly interpolated): where random prunings
    of that size fall, not a confidence interval of their mean."""

    mean: OutputChange
    lower: OutputChange
    upper: OutputChange
    sets: list[OutputChange] = Field(description="Each random pruning's outputs, in the order drawn.")


class PruningOutcome(Contract):
    """Three prunings of the same number of neurons per layer, each measured on the held-out
    images: by significance, uniformly at random, and the least active (lowest mean activation
    on the selection images). Outputs are null where nothing is pruned."""

    neurons_pruned: Count
    share_pruned: Probability
    significance: OutputChange | None = Field(
        description="The neurons in no membership selective at q_threshold zeroed."
    )
    random: RandomPrunings | None
    least_active: OutputChange | None = Field(
        description="The least-active neurons zeroed: significance pruning keeps the active "
        "neurons, so this baseline separates significance from activity."
    )


class LayerPruning(PruningOutcome):
    """One layer pruned alone (every other layer intact); shares are of that layer's neurons."""

    layer: str
    channels: Count


class PruningPoint(PruningOutcome):
    """One point of the pruning curve: all layers pruned at once at `q_threshold`, and each layer
    pruned alone at it."""

    q_threshold: Probability
    layers: list[LayerPruning]


class PruningVerdict(Contract):
    """Whether pruning by significance loses accuracy (agreement without labels), in a sentence."""

    measure: Literal["top1_accuracy", "top1_agreement"] = Field(
        description="top1_accuracy where held-out images carry labels, else top1_agreement."
    )
    tolerance: float = Field(ge=0, description="A fall of the measure by more than this is a loss.")
    loses: bool = Field(description="Pruning by significance at q <= alpha loses more than tolerance.")
    loses_at: list[Probability] = Field(description="Every q threshold of the curve at which it loses.")
    worst_layer: str | None = Field(
        description="At the threshold the sentence reports a loss for (alpha, else the largest "
        "loss): the layer whose significance pruning alone keeps the least; null without a loss."
    )
    sentence: str


class Pruning(Contract):
    """Significance pruning (Jo, Jun & Park 2020) on held-out images: which neurons are in no
    selective membership is decided on the selection images only (selectivity q-values counted
    there); the model's outputs are measured on the held-out images, at alpha and along a curve
    over `q_threshold`, for all layers at once and for each layer alone, next to random and
    least-active prunings of as many neurons per layer."""

    alpha: Probability
    heldout_images: Count = Field(description="Images the curve runs on (never used for selection).")
    selection_images: Count = Field(description="Images the selectivity q-values are counted on.")
    labelled_images: Count = Field(0, description="Held-out images with a class label (top1_accuracy).")
    random_sets: Count = Field(description="Random prunings at every point and layer.")
    unpruned_top1_accuracy: Probability | None = None
    at_alpha: PruningPoint
    curve: list[PruningPoint]
    verdict: PruningVerdict


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
