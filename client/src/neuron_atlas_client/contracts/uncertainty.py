"""`uncertainty.json`: the evidence for every membership, cluster and the job (docs/architecture.md,
"The method", step 8), written by the uncertainty stage; hierarchy.json carries it per neuron,
cluster and job.

Every test here has a null that the product's own selection rule makes true on images that
share no concept: `null` in each test's description says it in a sentence, and
`benchmarks/null_calibration.py` measures each test's false-positive rate under it.

The membership statistics are one table: `Evidence` (one membership, in hierarchy.json) is the
only place their names, types and descriptions are written. `MemberStats` (a cluster's members
as columns, in uncertainty.json), the JSON Schema and the docs are derived from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import Field, create_model

from neuron_atlas_client.contracts.base import Contract, Count, Probability

Interval = Annotated[list[float], Field(min_length=2, max_length=2)]  # [lower, upper]


class Evidence(Contract):
    """The statistics of one membership (cluster, layer, channel)."""

    count: Count = Field(description="Images of the cluster in which the neuron is active (k of n = size).")
    interval: Interval = Field(
        description="Confidence interval of the support at 1 - alpha (method in uncertainty.method.interval)."
    )
    p_value: Probability = Field(
        description="Selectivity: one-sided Fisher exact (hypergeometric) test that the neuron is "
        "active in this cluster's images more often than in the rest of the collection. Null: the "
        "cluster is a random set of the collection's images."
    )
    q_value: Probability = Field(
        description="Benjamini-Hochberg adjusted selectivity p-value across all selected neurons "
        "of the cluster."
    )
    selective: bool = Field(
        description="q_value <= alpha: the neuron is active here more often than elsewhere, not merely often."
    )
    chance_p_value: Probability = Field(
        description="One-sided exact binomial test of the support against the chance rate "
        "(the share of its layer active in any image, about top_fraction)."
    )
    chance_q_value: Probability = Field(
        description="Benjamini-Hochberg adjusted chance_p_value across the cluster's neurons."
    )
    above_chance: bool = Field(
        description="chance_q_value <= alpha: active more often than chance, not necessarily "
        "more often than elsewhere."
    )
    collection_rate: Probability = Field(description="Share of all the job's images in which it is active.")
    generic: bool = Field(
        description="Not selective here (q_value > alpha): its rate in this cluster is explained "
        "by its rate in the whole collection, whatever that rate is."
    )
    reliable: bool | None = Field(
        description="The interval's lower bound clears min_support. Null when the cluster has too "
        "few images for any count to clear it (too few images to tell)."
    )
    inclusion_probability: Probability | None = Field(
        None,
        description="Share of bootstrap resamples (images redrawn within the clusters) whose "
        "group contains the neuron; null without the bootstrap.",
    )
    expected_support: Probability | None = Field(
        None,
        description="Support expected under the dropout passes, over the cluster's images in the "
        "passes' sample (cluster uncertainty.model_uncertainty.images); null when none of them "
        "were sampled or no passes ran. Its interpretation is uncertainty.method.model_uncertainty's.",
    )
    expected_support_sd: float | None = Field(
        None, ge=0, description="Its standard deviation across the dropout passes."
    )
    expected_support_interval: Interval | None = Field(
        None,
        description="Its interval at 1 - alpha (the support interval's method), with each sampled "
        "image of the cluster one trial: as wide as the sample is small.",
    )
    augmented_support: Probability | None = Field(
        None,
        description="Support expected under test-time augmentation (input sensitivity, not model "
        "uncertainty), over the same sampled images; null without it.",
    )
    augmented_support_sd: float | None = Field(
        None, ge=0, description="Its standard deviation across the augmented passes."
    )


EVIDENCE_COLUMNS: tuple[str, ...] = tuple(Evidence.model_fields)


def _member_columns() -> dict[str, Any]:
    """Each Evidence field as a column (one entry per member); a column whose field has a
    default is null when its method did not run for the cluster."""
    columns: dict[str, Any] = {
        "neuron": (list[int], Field(description="Global neuron index of each member."))
    }
    for name, field in Evidence.model_fields.items():
        column: Any = list[field.annotation]  # type: ignore[name-defined]
        if field.is_required():
            columns[name] = (column, Field(description=field.description))
        else:
            columns[name] = (column | None, Field(None, description=field.description))
    return columns


# A cluster's group members, one entry per member in every list (columns of Evidence).
MemberStats = cast(
    type[Contract],
    create_model(
        "MemberStats",
        __base__=Contract,
        __doc__="A cluster's group members as columns: one entry per member in every list, the "
        "fields of Evidence.",
        **_member_columns(),
    ),
)


def member_column(members: Contract, name: str) -> list[Any] | None:
    """One column of a MemberStats (`neuron` or a field of Evidence)."""
    return cast(list[Any] | None, getattr(members, name))


TestStatus = Literal["tested", "budget", "too_few_images", "no_group", "no_difference", "no_siblings", "off"]


class TestState(Contract):
    """Whether a test ran for this cluster, and if not, why, in words a user reads."""

    status: TestStatus = Field(
        description="tested; budget (not tested: the uncertainty budget ran out before this "
        "cluster); too_few_images (not tested: no p-value below alpha is possible with its "
        "images); no_group / no_difference / no_siblings (nothing to test); off (not run)."
    )
    note: str = Field(description="The status in words, e.g. 'not tested: 3 images'.")


class KeepOnlySpecificity(Contract):
    """Every selected neuron but the group zeroed: the concept's held-out images keep their
    output better than other images do."""

    test_drop: float = Field(description="Mean drop of the held-out concept images' top logit.")
    reference_drop: float = Field(description="Mean drop of the reference images' top logit.")
    effect: float = Field(description="reference_drop - test_drop.")
    interval: Interval | None
    p_value: Probability
    q_value: Probability | None = Field(None, description="Benjamini-Hochberg across the job's tests.")
    significant: bool | None = Field(None, description="q_value <= alpha.")


class SpecificityResult(Contract):
    """The group, chosen again on some of the concept's images, zeroed on the others (held out)
    and on reference images from outside the concept: drops of each image's unablated top logit."""

    selection_images: Count = Field(description="Images the group was chosen on (the rule re-run).")
    test_images: Count = Field(description="The concept's held-out images the effect is measured on.")
    reference_images: Count = Field(description="Images from outside the concept, seeded.")
    selection_group_size: Count = Field(description="Neurons in the group chosen on the selection images.")
    selection_group_jaccard: Probability = Field(
        description="Jaccard index of that group with the concept's reported group."
    )
    test_drop: float
    reference_drop: float
    effect: float = Field(description="test_drop - reference_drop: the group's specific effect.")
    interval: Interval | None = Field(description="Welch t interval of the effect at 1 - alpha.")
    p_value: Probability = Field(
        description="Permutation test of the effect over the held-out and reference images "
        "(exact where there are at most 20,000 arrangements, else 9,999 seeded draws)."
    )
    min_p_value: Probability = Field(description="The smallest p-value these images could give.")
    q_value: Probability | None = Field(None, description="Benjamini-Hochberg across the job's tests.")
    significant: bool | None = Field(None, description="q_value <= alpha.")
    keep_only: KeepOnlySpecificity
    equally_active_drop: float | None = Field(
        description="Beyond activity: the held-out images' mean drop when as many of the most "
        "active non-group neurons per layer (ranked on the selection images) are zeroed instead."
    )
    drop_per_activation: float | None = Field(
        description="test_drop per unit of pooled activation the group's zeroing removes."
    )
    equally_active_drop_per_activation: float | None = Field(
        description="The same for the equally active non-group neurons."
    )


class Specificity(TestState):
    """Causal evidence on images the group was not chosen on. Null: ablating the group affects the
    concept's held-out images like any other images (true of a random set of images, since the
    group is chosen without them)."""

    result: SpecificityResult | None = None


class ImportanceResult(Contract):
    """Ablation of the reported group on the concept's images against size-matched random neuron
    sets (same count per layer, drawn uniformly): drops of each image's unablated top logit.
    It measures how much activity the group carries, not a concept: any strongly active set
    passes it."""

    images: int = Field(ge=1)
    random_sets: int = Field(ge=1)
    group_drop: float
    random_drop_mean: float
    random_drop_sd: float
    effect: float = Field(description="Group drop minus the random sets' mean drop (paired per image).")
    interval: Interval | None
    p_value: Probability
    q_value: Probability | None = Field(None, description="Benjamini-Hochberg across the job's tests.")
    significant: bool | None = Field(None, description="q_value <= alpha.")


class Importance(TestState):
    """Importance versus random neurons (runs with --uncertainty-budget full). Null: the group is
    as important as uniformly drawn neurons, which equally active random neurons are not."""

    result: ImportanceResult | None = None


class DifferenceResult(Contract):
    """How much more the child's images use its difference neurons than its siblings' images."""

    child_support: Probability = Field(
        description="Mean support of the difference neurons among the child's images."
    )
    sibling_support: Probability = Field(description="The same among its siblings' images.")
    statistic: float = Field(description="child_support - sibling_support.")
    child_carrier_share: Probability = Field(
        description="Share of the child's images that carry the difference neurons (at least "
        "min_support of them active)."
    )
    sibling_carrier_share: Probability
    permutations: Count = Field(description="Permutations compared (sequential stopping).")
    p_value: Probability = Field(
        description="Share of permutations of the parent's images among its children, with the "
        "group rule re-run in each, whose statistic reaches the observed one."
    )
    min_p_value: Probability
    q_value: Probability | None = Field(None, description="Benjamini-Hochberg across the job's tests.")
    significant: bool | None = Field(None, description="q_value <= alpha.")


class DifferenceTest(TestState):
    """Do the child's images carry its difference neurons more than its siblings'? Null: the
    parent's images are exchangeable between the child and its siblings (the rule that picks
    the difference neurons is re-run on every permutation, so picking them is no evidence)."""

    result: DifferenceResult | None = None


class ClusterModelUncertainty(Contract):
    """Predictive entropy of the dropout passes, mean over the cluster's sampled images (nats):
    total = expected_entropy + mutual_information. Read mutual_information as the job's
    method.model_uncertainty.interpretation says."""

    images: Count = Field(description="The cluster's images in the passes' sample.")
    total: float = Field(ge=0)
    expected_entropy: float = Field(ge=0)
    mutual_information: float = Field(ge=0)


class ClusterStats(Contract):
    """One cluster of uncertainty.json."""

    size: int = Field(ge=1)
    members: MemberStats  # type: ignore[valid-type]
    group_stability: Probability | None = Field(
        description="Mean Jaccard index of the group recomputed on bootstrap resamples of the "
        "cluster's images with the group (the clustering held fixed)."
    )
    clustering_stability: Probability | None = Field(
        None,
        description="Mean Jaccard index of the cluster with its best-matching cluster when FINCH "
        "runs again on subsamples of the captions (the clustering itself resampled); null without it.",
    )
    specificity: Specificity
    importance: Importance
    difference_test: DifferenceTest | None = Field(description="Null at the top level.")
    model_uncertainty: ClusterModelUncertainty | None = Field(
        None, description="Null when none of the cluster's images were in the dropout passes' sample."
    )


class ImageModelUncertainty(Contract):
    """Per image in the dropout passes' sample (rows of hierarchy.json's images), columns."""

    rows: list[int]
    total: list[float]
    expected_entropy: list[float]
    mutual_information: list[float]


class DropoutCalibration(Contract):
    """Injected dropout's rate fitted on labelled images by negative log-likelihood (nats), and
    scored on other labelled images against the model without dropout."""

    rate: float = Field(ge=0, description="The rate chosen; 0: no rate calibrated better than none.")
    calibrated: bool = Field(
        description="A rate above 0 lowered the held-out NLL by more than 2 standard errors: the "
        "passes are then read as epistemic uncertainty."
    )
    finding: str = Field(description="What the calibration found, in a sentence.")
    samples: int = Field(ge=1)
    fit_images: Count
    evaluation_images: Count
    grid: list[float]
    fit_nll: list[float] = Field(description="NLL on the fit images at each rate of the grid.")
    fit_ece: list[float] = Field(description="Expected calibration error (15 bins) at each rate.")
    nll: float = Field(description="NLL at the chosen rate on the evaluation images.")
    ece: float
    deterministic_nll: float = Field(description="The model without dropout, on the evaluation images.")
    deterministic_ece: float
    gain_se: float = Field(ge=0, description="Standard error of the held-out NLL gain, paired per image.")


class ModelUncertaintyMethod(Contract):
    """Dropout passes: the model's own dropout (mc_dropout, Gal & Ghahramani 2016), or dropout
    injected before each read layer at `dropout_rate` (injected_dropout)."""

    method: Literal["mc_dropout", "injected_dropout"]
    interpretation: Literal["epistemic", "sensitivity to feature dropout"] = Field(
        description="epistemic: the model's own dropout, or injected dropout whose rate was "
        "calibrated on labelled images; mutual_information then is the model's uncertainty. "
        "Otherwise it is the outputs' sensitivity to dropping features, not what the model lacks."
    )
    samples: int = Field(ge=1)
    images: Count = Field(description="Images in the seeded sample the passes ran on.")
    dropout_rate: float | None = Field(description="The injected rate; null for the model's own dropout.")
    calibration: DropoutCalibration | None = None


class InputSensitivityMethod(Contract):
    """Test-time augmentation: how the active sets move under flips, crops and colour jitter."""

    method: Literal["tta"]
    samples: int = Field(ge=1)
    images: Count = Field(description="Images in the seeded sample the passes ran on.")


class TestMethod(Contract):
    """One test the job reports, and what its p-values are tested against."""

    name: str
    null: str = Field(description="The test's null in a sentence.")
    statistic: str
    multiple_testing: str


class PlanStep(Contract):
    """One step of the uncertainty stage's plan: what ran, on how many images, what did not."""

    name: str
    ran: bool
    images: Count | None = None
    passes_per_image: float | None = Field(
        None, description="Model passes per image, in forward-pass equivalents."
    )
    cost: float = Field(0.0, ge=0, description="Planned cost in forward-pass equivalents (FPE).")
    tested: Count | None = Field(None, description="Clusters tested (per-cluster tests).")
    not_tested_budget: Count | None = None
    not_tested_too_few_images: Count | None = None
    note: str = ""


class Plan(Contract):
    """How the uncertainty stage spent its budget (--uncertainty-budget): allocated in a fixed
    order that depends on no result, in forward-pass equivalents (FPE: one float32 pass of the
    target model over one image; each kind of pass priced by its FLOPs and by what a bfloat16
    pass was measured to cost on that kind of device), so that the same job plans the same on
    the same kind of device and repeats exactly. What each step took in seconds, and one batch
    of each kind of pass timed, are in uncertainty_timing.json beside it."""

    budget: float | Literal["full"] = Field(
        description="FPE per image the stage may spend (the activation pass is 1), or full."
    )
    allowed: float | None = Field(description="FPE allowed in all: budget x images; null when full.")
    planned: float = Field(ge=0, description="FPE the steps below plan to spend.")
    pass_costs: dict[str, float] = Field(
        description="FPE per image of each kind of pass: prefix (up to the first read layer), "
        "partial (from it), full; dropout_* from the first read layer's input; augmentation, "
        "what a test-time augmentation adds to its pass."
    )
    steps: list[PlanStep]


class UncertaintyTiming(Contract):
    """uncertainty_timing.json: the stage's wall time on this machine (not part of the result,
    which repeats exactly)."""

    seconds: float = Field(ge=0, description="The whole stage.")
    phases: dict[str, float] = Field(description="Seconds per phase.")
    seconds_per_image: dict[str, float] = Field(
        description="One batch of each kind of pass, timed (forward_float32, full, prefix, partial)."
    )


class UncertaintyMethod(Contract):
    alpha: float
    interval: Literal["wilson", "clopper_pearson"]
    tests: list[TestMethod]
    chance_rate: dict[str, Probability] = Field(description="Per layer: the share of it active by chance.")
    bootstrap_resamples: Count
    bootstrap: str
    clustering_resamples: Count
    generic: str
    model_uncertainty: ModelUncertaintyMethod | None
    input_sensitivity: InputSensitivityMethod | None
    pass_precision: Literal["float32", "bfloat16"] | None = Field(
        None,
        description="Number format of the model passes (option pass_precision); the activation "
        "pass that defines the groups is float32. Null when none ran.",
    )
    seed: int


class TestCounts(Contract):
    tested: Count
    significant: Count
    not_tested_budget: Count
    not_tested_too_few_images: Count


class UncertaintySummary(Contract):
    """The job's `uncertainty` report."""

    memberships: Count
    reliable_share: Probability | None = Field(
        description="Share of memberships whose interval clears min_support."
    )
    too_few_images_share: Probability | None = Field(
        description="Share of memberships in clusters too small for any to be reliable."
    )
    selective_share: Probability | None = Field(description="Share of memberships that are selective.")
    above_chance_share: Probability | None
    frequent_neurons: Count = Field(
        description="Neurons active in >= min_support of all images (exclude_generic leaves them "
        "out of every group)."
    )
    generic_memberships: Count = Field(description="Memberships that are not selective.")
    mean_group_stability: Probability | None
    mean_clustering_stability: Probability | None = None
    specificity: TestCounts
    keep_only: TestCounts
    importance: TestCounts
    difference: TestCounts


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
    """hierarchy.json's `uncertainty`: how the evidence was computed, the plan, the summary."""

    method: UncertaintyMethod
    plan: Plan
    summary: UncertaintySummary
    pruning: Pruning | None


class Uncertainty(Contract):
    """uncertainty.json."""

    method: UncertaintyMethod
    plan: Plan
    clusters: dict[str, ClusterStats]
    summary: UncertaintySummary
    pruning: Pruning | None
    image_model_uncertainty: ImageModelUncertainty | None = None

    def job(self) -> JobUncertainty:
        return JobUncertainty(method=self.method, plan=self.plan, summary=self.summary, pruning=self.pruning)
