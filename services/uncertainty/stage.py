"""The uncertainty stage over a job's store: reads partitions.npy, embeddings.npy, the activation
shards and the stored groups (`groups.json`), writes `uncertainty.json` (what
`assemble_hierarchy` merges into hierarchy.json).

- `run_uncertainty(store, options, target=None, read_bytes=None)`: the one entry, called by the
  Celery task and the embedded runner; the model passes run when a target model and an image
  reader are given and the budget allows them. Class labels that the submission brought
  (manifest `label`) calibrate injected dropout and give the pruning curve its accuracy.
- `compute_uncertainty(inputs, options, ...)`: the same on arrays.

The stage is the plan (plan.py) and one call per method, in the plan's order, each method a unit
of its own with its null in a sentence (docs/uncertainty.md is built from them):

| method                | module                | what it says                                      |
|-----------------------|-----------------------|---------------------------------------------------|
| membership statistics | stats.py, membership.py | intervals, selectivity, chance, reliability     |
| group stability       | bootstrap.py          | the group on bootstrap resamples of its images     |
| clustering stability  | cluster_stability.py  | the cluster when FINCH runs on subsamples          |
| difference test       | difference.py         | the child's images carry its difference neurons    |
| model uncertainty     | model_uncertainty.py  | dropout passes (dropout_calibration.py)            |
| input sensitivity     | model_uncertainty.py  | test-time augmentation                             |
| pruning curve         | pruning.py            | significance pruning on held-out images            |
| specificity           | specificity.py        | the group's causal effect on held-out images       |
| importance            | importance.py         | the group against uniform random neurons (full)    |

then Benjamini-Hochberg across the job's clusters, one family per test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuron_atlas_client.contracts.groups import Groups
from neuron_atlas_client.contracts.models import IMAGENET_EVAL, Preprocessing
from neuron_atlas_client.contracts.uncertainty import (
    ClusterModelUncertainty,
    ClusterStats,
    DifferenceResult,
    DifferenceTest,
    Importance,
    Plan,
    PlanStep,
    Specificity,
    TestCounts,
    TestMethod,
    Uncertainty,
    UncertaintyTiming,
)
from neuron_atlas_client.options import PipelineOptions
from neuron_core.active_sets import read_active_sets
from neuron_core.groups import LevelGroups, allowed_neurons, stored_groups
from neuron_core.neuron_axis import LayerInfo
from neuron_core.read_layer_start import split_at_first_read_layer
from neuron_core.target_model import LoadedModel
from services.uncertainty import ablation as abl
from services.uncertainty import difference, importance, specificity
from services.uncertainty.bootstrap import BootstrapResult, bootstrap_groups
from services.uncertainty.cluster_stability import ClusteringStability, clustering_stability
from services.uncertainty.dropout_calibration import (
    DEFAULT_GRID,
    DropoutCalibration,
    calibrate_injected_dropout,
    calibration_passes,
)
from services.uncertainty.entropy import EntropySplit, cluster_means
from services.uncertainty.membership import MembershipTable
from services.uncertainty.model_inputs import ImageSource, ModelInputs
from services.uncertainty.model_uncertainty import (
    StochasticActivity,
    expected_support,
    pick_method,
    stochastic_active_sets,
)
from services.uncertainty.plan import Allocation, ConceptRef, PassCosts, allocate, pass_costs
from services.uncertainty.precision import dtype_name, pass_dtype, runs_in
from services.uncertainty.pruning import curve_thresholds, pruning_cost, pruning_report
from services.uncertainty.selectivity import collection_rate
from services.uncertainty.stats import benjamini_hochberg, can_be_reliable, chance_rates, membership_stats
from shared.pipeline.ingest import decode_image
from shared.pipeline.progress import NoProgress, Progress
from shared.pipeline.stage_job import StageJob
from shared.pipeline.tree import cluster_id
from shared.storage import artifacts
from shared.storage.stores import Store, get_json, get_npy

log = logging.getLogger(__name__)

PHASE_MESSAGE = "uncertainty phase %s: %.3f s"
PHASE_CPU_MESSAGE = "uncertainty phase %s: %.3f s of process CPU"
CLUSTERING_FRACTION = 0.8
SPECIFICITY_STEP = "specificity tests"  # the progress this stage reports: one step per tested concept

TESTS = (
    TestMethod(
        name="selectivity",
        null="The cluster is a random set of the collection's images: the neuron is active in it "
        "as often as in the rest of the collection.",
        statistic="hypergeometric P(X >= k), X ~ Hypergeom(all images, actives among them, cluster size)",
        multiple_testing="Benjamini-Hochberg across all selected neurons of each cluster",
    ),
    TestMethod(
        name="specificity",
        null=specificity.NULL,
        statistic="mean drop of the held-out concept images' top logit minus the reference "
        "images'; permutation p-value over those images",
        multiple_testing="Benjamini-Hochberg across the job's tested concepts",
    ),
    TestMethod(
        name="keep_only",
        null="Keeping only the group (chosen again on some of the concept's images) keeps its "
        "held-out images' outputs no better than other images'.",
        statistic="mean drop of the reference images minus the held-out images'; permutation p-value",
        multiple_testing="Benjamini-Hochberg across the job's tested concepts",
    ),
    TestMethod(
        name="difference",
        null=difference.NULL,
        statistic="mean support of the difference neurons among the child's images minus among "
        "its siblings', against the same with the parent's images permuted among its children "
        "and the group rule re-run",
        multiple_testing="Benjamini-Hochberg across the job's tested children",
    ),
    TestMethod(
        name="importance",
        null=importance.NULL,
        statistic="exact rank of the group's mean drop among uniform random sets' mean drops",
        multiple_testing="Benjamini-Hochberg across the job's tested concepts",
    ),
)


@contextmanager
def _phase(name: str, seconds: dict[str, float]) -> Iterator[None]:
    """Log how long a phase took (INFO), and keep it for the plan: users see where a run's time
    goes with -v, and the pipeline benchmark reads the same lines."""
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        seconds[name] = time.perf_counter() - start
        log.info(PHASE_MESSAGE, name, seconds[name])
        # on cores shared with other work, CPU time moves much less with their load than wall time
        log.info(PHASE_CPU_MESSAGE, name, time.process_time() - cpu_start)


def manifest_image_reader(
    manifest: Mapping[str, Any], image_ids: Sequence[str], read_bytes: Callable[[dict[str, Any]], bytes]
) -> ImageSource:
    """Decoded images for row indices of the job, from manifest entries and a byte reader
    (a file in the embedded run, a member of `images/{shard}.zip` in object storage in the suite). These
    images were decoded once already, so a failure now is an error, not a skip."""
    entries = {entry["id"]: entry for entry in manifest["images"]}

    def read(rows: Sequence[int]) -> list[Image.Image]:
        return [decode_image(read_bytes(entries[image_ids[i]])) for i in rows]

    return read


def class_labels(manifest: Mapping[str, Any], image_ids: Sequence[str]) -> np.ndarray | None:
    """Per image, the class index its submission gave (`label`), -1 where none or not an
    integer; None when no image has one."""
    given = {entry["id"]: entry.get("label") for entry in manifest["images"]}
    if not any(given.get(i) not in (None, "") for i in image_ids):
        return None

    def index(value: object) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            return -1
        return number if number >= 0 else -1

    return np.array([index(given.get(i)) if given.get(i) is not None else -1 for i in image_ids])


@dataclass(frozen=True)
class JobArrays:
    """What the statistics read: rows are the job's usable images, in the captions' order."""

    partitions: np.ndarray  # (images, levels)
    mask: np.ndarray  # (images, neurons) active sets
    pooled: np.ndarray  # (images, neurons) mean activations, float32
    levels: Sequence[LevelGroups]
    layers: Sequence[LayerInfo]
    embeddings: np.ndarray | None = None  # (images, d) caption embeddings, for clustering stability
    labels: np.ndarray | None = None  # class index per image, -1 unknown


@dataclass(frozen=True)
class ModelSide:
    """The target model and its images, for the methods that run model passes."""

    module: nn.Module
    read_images: ImageSource
    device: torch.device
    prep: Preprocessing = IMAGENET_EVAL


def run_uncertainty(
    store: Store,
    options: PipelineOptions,
    target: LoadedModel | None = None,
    read_bytes: Callable[[dict[str, Any]], bytes] | None = None,
    progress: Progress | None = None,
) -> Uncertainty:
    """Statistics for every membership, cluster and the job into `uncertainty.json`; with a
    target model and `read_bytes` (a manifest entry's image bytes), the model passes too;
    `progress` hears of the specificity tests, concept by concept (the stage's long part)."""
    image_ids = [row["image_id"] for row in artifacts.read_usable_captions(store)]
    active = read_active_sets(store, image_ids, pooled=True)
    partitions = get_npy(store, artifacts.PARTITIONS)
    levels = stored_groups(artifacts.read_model(store, artifacts.GROUPS, Groups), partitions, active.mask)
    manifest = get_json(store, artifacts.MANIFEST)
    embeddings = get_npy(store, artifacts.EMBEDDINGS) if store.exists(artifacts.EMBEDDINGS) else None
    arrays = JobArrays(
        partitions,
        active.mask,
        np.asarray(active.pooled, dtype=np.float32),
        levels,
        active.layers,
        embeddings,
        class_labels(manifest, image_ids),
    )
    side = None
    if target is not None and read_bytes is not None:
        side = ModelSide(
            target.module,
            manifest_image_reader(manifest, image_ids, read_bytes),
            target.device,
            target.preprocessing,
        )
    uncertainty, timing = computed_with_timing(arrays, options, side, progress)
    artifacts.write_model(store, artifacts.UNCERTAINTY, uncertainty)
    artifacts.write_model(store, artifacts.UNCERTAINTY_TIMING, timing)
    return uncertainty


def compute_uncertainty(
    arrays: JobArrays,
    options: PipelineOptions,
    side: ModelSide | None = None,
    progress: Progress | None = None,
) -> Uncertainty:
    """The uncertainty.json document (see the module doc)."""
    return computed_with_timing(arrays, options, side, progress)[0]


def computed_with_timing(
    arrays: JobArrays,
    options: PipelineOptions,
    side: ModelSide | None = None,
    progress: Progress | None = None,
) -> tuple[Uncertainty, UncertaintyTiming]:
    """uncertainty.json's document, and what it took here (uncertainty_timing.json)."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    partitions, mask, levels, layers = arrays.partitions, arrays.mask, arrays.levels, arrays.layers
    n_images = mask.shape[0]
    chance = chance_rates(layers, options.top_fraction, options.ranking)
    totals = mask.sum(axis=0)
    rate = collection_rate(mask)
    allowed = allowed_neurons(mask, options.min_support, options.exclude_generic)

    # 1. statistics, bootstraps, difference tests: no model passes
    with _phase("statistics", seconds):
        tables = [
            MembershipTable(
                membership_stats(
                    lv.counts,
                    lv.sizes,
                    lv.members,
                    chance,
                    options.alpha,
                    options.min_support,
                    options.interval,
                    totals,
                    n_images,
                ),
                lv.counts,
                rate,
                can_be_reliable(lv.sizes, options.alpha, options.min_support, options.interval),
            )
            for lv in levels
        ]
    with _phase("bootstrap", seconds):
        boot = _group_bootstrap(arrays, options)
    if boot is not None:
        for table, inclusion in zip(tables, boot.inclusion, strict=True):
            table.extra["inclusion_probability"] = inclusion.astype(np.float64)
    with _phase("clustering resamples", seconds):
        clustering = _clustering_stability(arrays, options)
    with _phase("difference tests", seconds):
        differences = (
            difference.difference_tests(
                partitions,
                mask,
                options.min_support,
                options.group_rule,
                options.exclude_generic,
                options.difference_permutations,
                options.alpha,
                options.seed,
            )
            if options.difference_permutations > 0
            else {}
        )

    # 2-5. the model passes, as the plan allows
    passes = _ModelPasses.start(side, arrays, options, seconds) if side is not None else None
    allocation = passes.allocation if passes else None
    activity = sensitivity = None
    calibration = None
    pruning = None
    specificities: dict[tuple[int, int], Specificity] = {}
    importances: dict[tuple[int, int], Importance] = {}
    if passes is not None:
        calibration, activity, sensitivity = passes.stochastic(seconds)
        with _phase("pruning curve", seconds):
            pruning = passes.pruning()
        with _phase("specificity tests", seconds):
            specificities = passes.specificity(allowed, progress or NoProgress())
        with _phase("importance tests", seconds):
            importances = passes.importance()
        passes.close()
    for lv, table in enumerate(tables):
        if activity is not None:
            support = expected_support(
                activity.passes, activity.rows.tolist(), partitions[:, lv], levels[lv].sizes.shape[0]
            )
            table.extra["expected_support"] = support.mean
            table.extra["expected_support_sd"] = support.sd_passes
            table.expected_interval = partial(support.interval, alpha=options.alpha, method=options.interval)
        if sensitivity is not None:
            augmented = expected_support(
                sensitivity.passes, sensitivity.rows.tolist(), partitions[:, lv], levels[lv].sizes.shape[0]
            )
            table.extra["augmented_support"] = augmented.mean
            table.extra["augmented_support_sd"] = augmented.sd_passes

    clusters: dict[str, ClusterStats] = {}
    for lv, (level, table) in enumerate(zip(levels, tables, strict=True)):
        entropy = _cluster_entropy(activity, partitions[:, lv], level.sizes.shape[0])
        for k in range(level.sizes.shape[0]):
            key = (lv, k)
            clusters[cluster_id(lv + 1, k)] = ClusterStats(
                size=int(level.sizes[k]),
                members=table.columns(k, np.flatnonzero(level.members[k])),
                group_stability=round(float(boot.stability[lv][k]), 6) if boot else None,
                clustering_stability=_clustering_at(clustering, lv, k),
                specificity=specificities.get(key) or _not_run_specificity(level, lv, k, allocation),
                importance=importances.get(key) or _not_run_importance(level, k, allocation),
                difference_test=_difference_document(differences, level, lv, k, options),
                model_uncertainty=_entropy_at(entropy, k),
            )
    correct_across_clusters(clusters, options.alpha)
    plan = _plan_document(options, allocation, passes, n_images)
    timing = timing_document(seconds, time.perf_counter() - started, passes)
    uncertainty = Uncertainty.model_validate(
        {
            "method": _method(options, layers, chance, activity, sensitivity, calibration, passes),
            "plan": plan,
            "clusters": {key: stats.document() for key, stats in clusters.items()},
            "summary": _summary(clusters, levels, tables, rate, options.min_support),
            "pruning": pruning.document() if pruning is not None else None,
            "image_model_uncertainty": _image_entropy(activity),
        }
    )
    return uncertainty, timing


def _group_bootstrap(arrays: JobArrays, options: PipelineOptions) -> BootstrapResult | None:
    if options.bootstrap_resamples == 0:
        return None
    generic = arrays.mask.mean(axis=0) >= options.min_support
    return bootstrap_groups(
        arrays.partitions,
        arrays.mask,
        arrays.levels,
        options.min_support,
        options.group_rule,
        options.bootstrap_resamples,
        options.seed,
        exclude=generic if options.exclude_generic else None,
    )


def _clustering_stability(arrays: JobArrays, options: PipelineOptions) -> ClusteringStability | None:
    if options.clustering_resamples == 0 or arrays.embeddings is None or arrays.mask.shape[0] < 4:
        return None
    return clustering_stability(
        arrays.embeddings,
        arrays.partitions,
        options.clustering_resamples,
        CLUSTERING_FRACTION,
        options.seed,
        options.ann_threshold,
    )


def _clustering_at(clustering: ClusteringStability | None, lv: int, k: int) -> float | None:
    if clustering is None or lv >= len(clustering.jaccard):
        return None
    value = float(clustering.jaccard[lv][k])
    return None if np.isnan(value) else round(value, 6)


class _ModelPasses:
    """The model side of one run: the plan, the ablated model and the images, decoded once."""

    def __init__(
        self,
        side: ModelSide,
        arrays: JobArrays,
        options: PipelineOptions,
        dtype: torch.dtype,
        costs: PassCosts,
        allocation: Allocation,
        inputs: ModelInputs,
        ablated: abl.AblatedModel,
        concepts: list[specificity.Concept],
    ) -> None:
        self.side, self.arrays, self.options, self.dtype = side, arrays, options, dtype
        self.costs, self.allocation, self.inputs, self.ablated = costs, allocation, inputs, ablated
        self.concepts = concepts

    @classmethod
    def start(
        cls, side: ModelSide, arrays: JobArrays, options: PipelineOptions, seconds: dict[str, float]
    ) -> _ModelPasses | None:
        if options.uncertainty_budget == 0:
            return None
        device = side.device
        dtype = pass_dtype(options.pass_precision, device)
        if options.pass_precision == "auto":
            dtype = dtype if runs_in(side.module, device, dtype, side.prep.input_size) else torch.float32
        inputs = ModelInputs(side.read_images, device, prep=side.prep)
        names = [layer.name for layer in arrays.layers]
        ablated = abl.AblatedModel(side.module, arrays.layers, dtype=dtype)
        n = arrays.mask.shape[0]
        sample_rows = list(range(min(n, 4)))  # one small batch: the timings are for the record
        with _phase("planning", seconds):
            costs = pass_costs(
                side.module,
                ablated.start,
                split_at_first_read_layer(side.module, names, at_input=True),
                inputs(sample_rows),
                dtype,
            )
            concepts = [
                specificity.Concept(lv, k, np.flatnonzero(arrays.partitions[:, lv] == k), level.members[k])
                for lv, level in enumerate(arrays.levels)
                for k in range(level.sizes.shape[0])
            ]
            refs = [ConceptRef(c.level, c.index, c.rows.shape[0], bool(c.group.any())) for c in concepts]
            mc_dropout = pick_method(side.module, names, device, side.prep.input_size) == "mc_dropout"
            thresholds = curve_thresholds(options.pruning_thresholds, options.alpha)
            reference = options.specificity_reference_images

            def testable(concept: ConceptRef) -> bool:
                t = min(options.ablation_max_images, concept.size // 2)
                outside = min(reference, n - concept.size)
                return (
                    t >= 1
                    and concept.size - t >= 1
                    and outside >= 1
                    and specificity.min_p_value(t, outside) <= options.alpha
                )

            allocation = allocate(
                options.uncertainty_budget,
                n,
                costs,
                refs,
                testable,
                options.seed,
                options.mc_samples,
                options.tta_samples,
                mc_dropout,
                pruning_cost(len(arrays.layers), len(thresholds), options.pruning_random_sets, 1),
                pruning_cost(len(arrays.layers), len(thresholds), options.pruning_random_sets),
                options.ablation_max_images,
                reference,
                options.ablation_random_sets,
                arrays.labels >= 0 if arrays.labels is not None else None,
                _calibration_cost(options.mc_samples),
            )
        return cls(side, arrays, options, dtype, costs, allocation, inputs, ablated, concepts)

    def stochastic(
        self, seconds: dict[str, float]
    ) -> tuple[DropoutCalibration | None, StochasticActivity | None, StochasticActivity | None]:
        rows = self.allocation.passes_rows
        if rows.shape[0] == 0:
            return None, None, None
        options, side = self.options, self.side
        names = [layer.name for layer in self.arrays.layers]
        method = pick_method(side.module, names, side.device, side.prep.input_size)
        calibration = None
        labels = self.arrays.labels
        if (
            method == "injected_dropout"
            and options.mc_samples > 0
            and labels is not None
            and int((labels[rows] >= 0).sum()) >= 8
        ):
            with _phase("dropout calibration", seconds):
                calibration = calibrate_injected_dropout(
                    side.module,
                    self.arrays.layers,
                    self.inputs,
                    rows.tolist(),
                    labels,
                    samples=options.mc_samples,
                    seed=options.seed,
                    device=side.device,
                    batch_size=options.batch_size,
                    dtype=self.dtype,
                )
        activity = sensitivity = None
        with _phase("dropout passes", seconds):
            if options.mc_samples > 0:
                activity = self._passes(rows, options.mc_samples, None, calibration)
        with _phase("augmentation passes", seconds):
            if options.tta_samples > 0:
                sensitivity = self._passes(rows, options.tta_samples, "tta", None)
        return calibration, activity, sensitivity

    def _passes(
        self, rows: np.ndarray, samples: int, method: Any, calibration: DropoutCalibration | None
    ) -> StochasticActivity:
        options = self.options
        return stochastic_active_sets(
            self.side.module,
            self.arrays.layers,
            self.inputs,
            rows.tolist(),
            options.top_fraction,
            options.ranking,
            samples,
            options.seed,
            self.side.device,
            options.batch_size,
            method=method,
            dropout_rate=options.injected_dropout_rate,
            calibration=calibration,
            prep=self.side.prep,
            dtype=self.dtype,
        )

    def pruning(self) -> Any:
        held_out = self.allocation.pruning_rows
        if held_out.shape[0] == 0:
            return None
        arrays, options = self.arrays, self.options
        selection = np.setdiff1d(np.arange(arrays.mask.shape[0]), held_out)
        return pruning_report(
            self.ablated,
            self.inputs,
            held_out,
            selection,
            arrays.mask,
            arrays.partitions,
            [level.members for level in arrays.levels],
            # "least active" ranks by how often a neuron is in the top fraction on the selection
            # images (the product's own sense of active), not by mean activation: a signed
            # detector that is off on most images would rank lowest by its mean
            arrays.mask.astype(np.float32),
            options.pruning_thresholds,
            options.alpha,
            arrays.layers,
            options.pruning_random_sets,
            options.seed,
            options.batch_size,
            arrays.labels,
            layers_at_alpha_only=self.allocation.budget != "full",
        )

    def specificity(self, allowed: np.ndarray, progress: Progress) -> dict[tuple[int, int], Specificity]:
        arrays, options = self.arrays, self.options
        order = np.random.default_rng([options.seed, 23]).permutation(arrays.mask.shape[0])
        n_neurons = arrays.mask.shape[1]
        base = specificity.BaseOutputs(
            self.ablated,
            self.inputs,
            options.batch_size,
            n_neurons,
            keep_starts_of={int(r) for r in order[: 2 * options.specificity_reference_images]},
        )
        results: dict[tuple[int, int], Specificity] = {}
        progress.start(SPECIFICITY_STEP, list(self.allocation.specificity.values()).count("tested"))
        prepared: list[specificity.Prepared] = []
        for concept in self.concepts:
            key = (concept.level, concept.index)
            if self.allocation.specificity.get(key) != "tested":
                continue
            found = specificity.prepare(
                concept,
                arrays.partitions,
                arrays.mask,
                arrays.pooled,
                allowed,
                arrays.layers,
                order,
                options.ablation_max_images,
                options.specificity_reference_images,
                options.min_support,
                options.group_rule,
                options.alpha,
                options.seed,
            )
            if isinstance(found, Specificity):
                results[key] = found
                progress.advance(SPECIFICITY_STEP)
            else:
                prepared.append(found)
        # the concepts' passes run together, in full batches
        tested = specificity.specificity_tests(
            base, prepared, arrays.pooled, options.alpha, lambda: progress.advance(SPECIFICITY_STEP)
        )
        for found, result in zip(prepared, tested, strict=True):
            results[(found.concept.level, found.concept.index)] = result
        progress.finish(SPECIFICITY_STEP)
        return results

    def importance(self) -> dict[tuple[int, int], Importance]:
        if not self.allocation.importance:
            return {}
        options = self.options
        return {
            (c.level, c.index): importance.importance_test(
                self.ablated,
                self.inputs,
                c.rows,
                c.group,
                self.arrays.layers,
                options.ablation_random_sets,
                options.ablation_max_images,
                options.alpha,
                options.seed,
                c.level,
                c.index,
                options.batch_size,
            )
            for c in self.concepts
            if c.group.any()
        }

    def close(self) -> None:
        self.ablated.close()


def _not_run_specificity(level: LevelGroups, lv: int, k: int, allocation: Allocation | None) -> Specificity:
    size = int(level.sizes[k])
    if not level.members[k].any():
        return Specificity(status="no_group", note="no group to test")
    if allocation is None:
        return Specificity(
            status="off", note="not run: no model passes (--uncertainty-budget 0, or no model)"
        )
    if allocation.specificity.get((lv, k)) == "too_few_images":
        return Specificity(status="too_few_images", note=f"not tested: {size} images")
    return Specificity(status="budget", note="not tested: budget")


def _not_run_importance(level: LevelGroups, k: int, allocation: Allocation | None) -> Importance:
    if not level.members[k].any():
        return Importance(status="no_group", note="no group to test")
    return Importance(status="off", note="not run: runs with --uncertainty-budget full")


def _difference_document(
    differences: Mapping[tuple[int, int], difference.DifferenceResult],
    level: LevelGroups,
    lv: int,
    k: int,
    options: PipelineOptions,
) -> DifferenceTest | None:
    if level.parent is None:
        return None
    found = differences.get((lv, k))
    if found is None:
        return DifferenceTest(status="off", note="not run (--difference-permutations 0)")
    if found.status != "tested" or found.p_value is None:
        notes = {
            "no difference": ("no_difference", "no difference neurons"),
            "no siblings": ("no_siblings", "no siblings to compare with"),
            "too few images": ("too_few_images", f"not tested: {int(level.sizes[k])} images"),
        }
        status, note = notes[found.status]
        return DifferenceTest(status=status, note=note)
    return DifferenceTest(
        status="tested",
        note="tested",
        result=DifferenceResult(
            child_support=round(float(found.child_support or 0.0), 6),
            sibling_support=round(float(found.sibling_support or 0.0), 6),
            statistic=round(float(found.statistic or 0.0), 6),
            child_carrier_share=round(float(found.child_carrier_share or 0.0), 6),
            sibling_carrier_share=round(float(found.sibling_carrier_share or 0.0), 6),
            permutations=found.permutations,
            p_value=float(f"{found.p_value:.4g}"),
            min_p_value=float(f"{found.min_p_value:.4g}"),
        ),
    )


def _cluster_entropy(activity: StochasticActivity | None, labels: np.ndarray, n_clusters: int) -> Any:
    if activity is None or activity.entropy is None:
        return None
    sampled = np.asarray(labels)[activity.rows]
    counts = np.bincount(sampled, minlength=n_clusters)
    return cluster_means(activity.entropy, sampled, n_clusters), counts


def _entropy_at(entropy: Any, k: int) -> ClusterModelUncertainty | None:
    if entropy is None:
        return None
    split, counts = entropy
    if counts[k] == 0:
        return None
    return ClusterModelUncertainty(
        images=int(counts[k]),
        total=round(float(split.total[k]), 6),
        expected_entropy=round(float(split.expected_entropy[k]), 6),
        mutual_information=round(float(split.mutual_information[k]), 6),
    )


def _image_entropy(activity: StochasticActivity | None) -> dict[str, Any] | None:
    if activity is None or activity.entropy is None:
        return None
    split: EntropySplit = activity.entropy
    return {
        "rows": activity.rows.tolist(),
        "total": [round(float(v), 6) for v in split.total],
        "expected_entropy": [round(float(v), 6) for v in split.expected_entropy],
        "mutual_information": [round(float(v), 6) for v in split.mutual_information],
    }


def correct_across_clusters(clusters: Mapping[str, ClusterStats], alpha: float) -> None:
    """Benjamini-Hochberg across the job's clusters, one family per test (specificity,
    keep-only, difference, importance): each cluster's own p-value is valid; only the count of
    discoveries needs this. `significant` then reads the q-value."""
    families: list[list[Any]] = [
        [c.specificity.result for c in clusters.values() if c.specificity.result is not None],
        [c.specificity.result.keep_only for c in clusters.values() if c.specificity.result is not None],
        [
            c.difference_test.result
            for c in clusters.values()
            if c.difference_test and c.difference_test.result
        ],
        [c.importance.result for c in clusters.values() if c.importance.result is not None],
    ]
    for tests in families:
        if not tests:
            continue
        q_values = benjamini_hochberg(np.array([t.p_value for t in tests]))
        for test, q in zip(tests, q_values, strict=True):
            test.q_value = float(f"{float(q):.4g}")
            test.significant = bool(q <= alpha)


def _counts(states: Sequence[tuple[str, Any]]) -> TestCounts:
    """(status, result) pairs of one test across the job's clusters."""
    return TestCounts(
        tested=sum(1 for status, _ in states if status == "tested"),
        significant=sum(
            1 for status, result in states if status == "tested" and result and result.significant
        ),
        not_tested_budget=sum(1 for status, _ in states if status == "budget"),
        not_tested_too_few_images=sum(1 for status, _ in states if status == "too_few_images"),
    )


def _summary(
    clusters: Mapping[str, ClusterStats],
    levels: Sequence[LevelGroups],
    tables: Sequence[MembershipTable],
    rate: np.ndarray,
    min_support: float,
) -> dict[str, Any]:
    memberships = sum(int(level.members.sum()) for level in levels)
    reliable = sum(
        int((level.members & t.stats.reliable & t.can_be_reliable[:, None]).sum())
        for level, t in zip(levels, tables, strict=True)
    )
    too_small = sum(
        int((level.members & ~t.can_be_reliable[:, None]).sum())
        for level, t in zip(levels, tables, strict=True)
    )
    selective = sum(
        int((level.members & t.stats.significant).sum()) for level, t in zip(levels, tables, strict=True)
    )
    above_chance = sum(
        int((level.members & t.stats.above_chance).sum()) for level, t in zip(levels, tables, strict=True)
    )
    with_group = [c for c in clusters.values() if c.group_stability is not None and c.members.neuron]  # type: ignore[attr-defined]
    clustering = [c.clustering_stability for c in clusters.values() if c.clustering_stability is not None]
    specificities = [(c.specificity.status, c.specificity.result) for c in clusters.values()]
    keep_only = [(status, result.keep_only if result else None) for status, result in specificities]
    differences = [
        (c.difference_test.status, c.difference_test.result) for c in clusters.values() if c.difference_test
    ]
    share = (lambda x: round(x / memberships, 6)) if memberships else (lambda x: None)
    return {
        "memberships": memberships,
        "reliable_share": share(reliable),
        "too_few_images_share": share(too_small),
        "selective_share": share(selective),
        "above_chance_share": share(above_chance),
        "frequent_neurons": int((rate >= min_support).sum()),
        "generic_memberships": memberships - selective,
        "mean_group_stability": (
            round(float(np.mean([c.group_stability for c in with_group])), 6) if with_group else None
        ),
        "mean_clustering_stability": round(float(np.mean(clustering)), 6) if clustering else None,
        "specificity": _counts(specificities).document(),
        "keep_only": _counts(keep_only).document(),
        "importance": _counts(
            [(c.importance.status, c.importance.result) for c in clusters.values()]
        ).document(),
        "difference": _counts(differences).document(),
    }


def _method(
    options: PipelineOptions,
    layers: Sequence[LayerInfo],
    chance: np.ndarray,
    activity: StochasticActivity | None,
    sensitivity: StochasticActivity | None,
    calibration: DropoutCalibration | None,
    passes: _ModelPasses | None,
) -> dict[str, Any]:
    ran = activity is not None or sensitivity is not None or passes is not None
    return {
        "alpha": options.alpha,
        "interval": options.interval,
        "tests": [test.document() for test in TESTS],
        "chance_rate": {layer.name: round(float(chance[layer.offset]), 6) for layer in layers},
        "bootstrap_resamples": options.bootstrap_resamples,
        "bootstrap": "images resampled within each level-1 cluster; group rule reapplied per level",
        "clustering_resamples": options.clustering_resamples,
        "generic": "a membership is generic when it is not selective (q_value > alpha): its rate "
        "there is explained by the neuron's rate in the whole collection",
        "model_uncertainty": (
            {
                "method": activity.method,
                "interpretation": activity.interpretation,
                "samples": int(activity.passes.shape[0]),
                "images": int(activity.rows.shape[0]),
                "dropout_rate": activity.dropout_rate,
                "calibration": _calibration_document(calibration) if calibration is not None else None,
            }
            if activity
            else None
        ),
        "input_sensitivity": (
            {
                "method": "tta",
                "samples": int(sensitivity.passes.shape[0]),
                "images": int(sensitivity.rows.shape[0]),
            }
            if sensitivity
            else None
        ),
        "pass_precision": dtype_name(passes.dtype) if passes is not None and ran else None,
        "seed": options.seed,
    }


def _calibration_cost(samples: int) -> float:
    """Passes from the read layer's input per labelled image of the sample: half of them fit the
    rate, half score it (dropout_calibration.calibration_split)."""
    passes = calibration_passes(DEFAULT_GRID, samples)
    return (passes.fit + passes.evaluation) / 2


def _calibration_document(calibration: DropoutCalibration) -> dict[str, Any]:
    def r(values: Sequence[float]) -> list[float]:
        return [round(float(v), 6) for v in values]

    return {
        "rate": calibration.rate,
        "calibrated": calibration.calibrated,
        "finding": calibration.finding,
        "samples": calibration.samples,
        "fit_images": len(calibration.fit_rows),
        "evaluation_images": len(calibration.evaluation_rows),
        "grid": list(calibration.grid),
        "fit_nll": r(calibration.fit_nll),
        "fit_ece": r(calibration.fit_ece),
        "nll": round(calibration.evaluation_nll, 6),
        "ece": round(calibration.evaluation_ece, 6),
        "deterministic_nll": round(calibration.deterministic_nll, 6),
        "deterministic_ece": round(calibration.deterministic_ece, 6),
        "gain_se": round(calibration.gain_se, 6),
    }


def _plan_document(
    options: PipelineOptions,
    allocation: Allocation | None,
    passes: _ModelPasses | None,
    n_images: int,
) -> dict[str, Any]:
    budget = options.uncertainty_budget
    steps = [
        PlanStep(name="statistics", ran=True, images=n_images),
        PlanStep(
            name="group bootstrap",
            ran=options.bootstrap_resamples > 0,
            images=n_images,
            note=f"{options.bootstrap_resamples} resamples",
        ),
        PlanStep(
            name="clustering resamples",
            ran=options.clustering_resamples > 0,
            images=n_images,
            note=f"{options.clustering_resamples} FINCH runs on {CLUSTERING_FRACTION:.0%} subsamples",
        ),
        PlanStep(
            name="difference tests",
            ran=options.difference_permutations > 0,
            note=f"up to {options.difference_permutations} permutations each",
        ),
    ]
    if allocation is None or passes is None:
        reason = (
            "no model passes: --uncertainty-budget 0" if budget == 0 else "no model passes: no target model"
        )
        steps.append(PlanStep(name="model passes", ran=False, note=reason))
        return Plan(
            budget=budget,
            allowed=None if budget == "full" else float(budget) * n_images,
            planned=0.0,
            pass_costs={},
            steps=steps,
        ).document()
    costs = allocation.costs
    sample = int(allocation.passes_rows.shape[0])
    held_out = int(allocation.pruning_rows.shape[0])
    statuses = list(allocation.specificity.values())
    steps += [
        PlanStep(
            name="dropout and augmentation passes",
            ran=sample > 0,
            images=sample,
            cost=round(costs.get("model passes", 0.0), 3),
            note=(
                f"a seeded sample of {sample} of {n_images} images"
                if sample
                else "not run: the budget's share for them holds too few images"
            ),
        ),
        PlanStep(
            name="pruning curve",
            ran=held_out > 0,
            images=held_out,
            cost=round(costs.get("pruning", 0.0), 3),
            note=(
                f"{held_out} held-out images; significance counted on the other {n_images - held_out}"
                if held_out
                else "not run: the budget's share for it holds too few images"
            ),
        ),
        PlanStep(
            name="specificity tests",
            ran=statuses.count("tested") > 0,
            cost=round(costs.get("specificity", 0.0), 3),
            tested=statuses.count("tested"),
            not_tested_budget=statuses.count("budget"),
            not_tested_too_few_images=statuses.count("too_few_images"),
            note="largest concepts first, then the highest level",
        ),
        PlanStep(
            name="importance tests",
            ran=allocation.importance,
            cost=round(costs.get("importance", 0.0), 3),
            note="with --uncertainty-budget full"
            if allocation.importance
            else "runs with --uncertainty-budget full",
        ),
    ]
    return Plan(
        budget=budget,
        allowed=allocation.allowed,
        planned=round(allocation.planned, 3),
        pass_costs=passes.costs.document(),
        steps=steps,
    ).document()


def timing_document(
    seconds: Mapping[str, float], total: float, passes: _ModelPasses | None
) -> UncertaintyTiming:
    return UncertaintyTiming(
        seconds=round(total, 3),
        phases={name: round(value, 3) for name, value in seconds.items()},
        seconds_per_image=passes.costs.seconds if passes is not None else {},
    )


def uncertainty_stage(job: StageJob, shard: int | None = None) -> None:
    """The stage table's entry (shared/pipeline/stages.py)."""
    uncertainty = run_uncertainty(
        job.store, job.options, job.resource("target"), job.read_image, job.progress
    )
    job.report("uncertainty", uncertainty.summary.document())
