"""Uncertainty stage over a job's store: reads partitions.npy, the activation shards and the
stored groups (`groups.json`), writes `uncertainty.json` (what `assemble_hierarchy` merges into
hierarchy.json).

- `run_uncertainty(store, options, target=None, read_bytes=None)`: the one entry, called by the
  Celery task and the embedded runner; the model passes (dropout passes, test-time
  augmentation, causal checks, pruning curve) run when a target model and an image reader
  are given. Class labels that the submission brought (manifest `label`) feed the pruning
  curve's accuracy.
- `compute_uncertainty(...)`: the same on arrays, for callers that hold them already.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuron_core.active_sets import read_active_sets
from neuron_core.groups import LevelGroups, difference_neurons, one_hot, stored_groups
from neuron_core.layers import LayerInfo
from neuron_core.target_model import LoadedModel
from services.uncertainty import ablation as abl
from services.uncertainty.bootstrap import BootstrapResult, bootstrap_groups
from services.uncertainty.entropy import EntropySplit, cluster_means
from services.uncertainty.model_inputs import ImageSource, ModelInputs
from services.uncertainty.model_uncertainty import (
    StochasticActivity,
    expected_support,
    stochastic_active_sets,
)
from services.uncertainty.precision import dtype_name, pass_dtype, runs_in
from services.uncertainty.pruning import pruning_report
from services.uncertainty.selectivity import collection_rate
from services.uncertainty.stats import MembershipStats, benjamini_hochberg, chance_rates, membership_stats
from shared import artifacts
from shared.contracts.groups import Groups
from shared.contracts.models import IMAGENET_EVAL, Preprocessing
from shared.contracts.uncertainty import Uncertainty
from shared.ingest import decode_image
from shared.options import PipelineOptions
from shared.progress import NoProgress, Progress
from shared.storage import Store, get_json, get_npy
from shared.tree import cluster_id

log = logging.getLogger(__name__)

PHASE_MESSAGE = "uncertainty phase %s: %.3f s"
CAUSAL_STEP = "causal checks"  # the progress this stage reports: one step per checked cluster


@contextmanager
def _phase(name: str) -> Iterator[None]:
    """Log how long a phase took (INFO): users see where a run's time goes with -v, and the
    pipeline benchmark reads the same lines."""
    start = time.perf_counter()
    try:
        yield
    finally:
        log.info(PHASE_MESSAGE, name, time.perf_counter() - start)


def _r(values: np.ndarray, digits: int = 6) -> list[Any]:
    return [round(float(v), digits) for v in values]


def _sig(values: np.ndarray) -> list[float]:
    """Four significant digits: p-values far below 1e-6 stay readable instead of rounding to 0."""
    return [float(f"{float(v):.4g}") for v in values]


def manifest_image_reader(
    manifest: Mapping[str, Any], image_ids: Sequence[str], read_bytes: Callable[[dict[str, Any]], bytes]
) -> ImageSource:
    """Decoded images for row indices of the job, from manifest entries and a byte reader
    (a file in the embedded run, `images/{sha256}.{ext}` in object storage in the suite). These
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


def run_uncertainty(
    store: Store,
    options: PipelineOptions,
    target: LoadedModel | None = None,
    read_bytes: Callable[[dict[str, Any]], bytes] | None = None,
    progress: Progress | None = None,
) -> Uncertainty:
    """Statistics for every membership, cluster and the job into `uncertainty.json`; with a
    target model and `read_bytes` (a manifest entry's image bytes), the model passes too;
    `progress` hears of the causal checks, cluster by cluster (the stage's long part)."""
    image_ids = [row["image_id"] for row in artifacts.read_usable_captions(store)]
    active = read_active_sets(store, image_ids)
    partitions = get_npy(store, artifacts.PARTITIONS)
    levels = stored_groups(artifacts.read_model(store, artifacts.GROUPS, Groups), partitions, active.mask)
    read_images = None
    manifest = get_json(store, artifacts.MANIFEST)
    if target is not None and read_bytes is not None:
        read_images = manifest_image_reader(manifest, image_ids, read_bytes)
    uncertainty = compute_uncertainty(
        partitions,
        active.mask,
        levels,
        active.layers,
        options,
        target.module if target else None,
        read_images,
        target.device if target else None,
        class_labels(manifest, image_ids),
        target.preprocessing if target else IMAGENET_EVAL,
        progress,
    )
    artifacts.write_model(store, artifacts.UNCERTAINTY, uncertainty)
    return uncertainty


def compute_uncertainty(
    partitions: np.ndarray,
    mask: np.ndarray,
    levels: Sequence[LevelGroups],
    layers: Sequence[LayerInfo],
    options: PipelineOptions,
    model: nn.Module | None = None,
    read_images: ImageSource | None = None,
    device: torch.device | None = None,
    labels: np.ndarray | None = None,
    prep: Preprocessing = IMAGENET_EVAL,
    progress: Progress | None = None,
) -> Uncertainty:
    """The uncertainty.json document from partitions (images x levels), active sets and the
    groups of every level; `labels` (class index per image, -1 unknown) for pruning accuracy."""
    chance = chance_rates(layers, options.top_fraction, options.ranking)
    totals = mask.sum(axis=0)
    with _phase("statistics"):
        level_stats = [
            membership_stats(
                lv.counts,
                lv.sizes,
                lv.members,
                chance,
                options.alpha,
                options.min_support,
                options.interval,
                totals,
                mask.shape[0],
            )
            for lv in levels
        ]
    generic = level_stats[0].generic
    with _phase("bootstrap"):
        boot = (
            bootstrap_groups(
                partitions,
                mask,
                levels,
                options.min_support,
                options.group_rule,
                options.bootstrap_resamples,
                options.seed,
                exclude=generic if options.exclude_generic else None,
            )
            if options.bootstrap_resamples > 0
            else None
        )
    passes_model = model is not None and read_images is not None
    device = device or torch.device("cpu")
    dtype = pass_dtype(options.pass_precision, device)
    if passes_model and options.pass_precision == "auto":
        assert model is not None
        dtype = dtype if runs_in(model, device, dtype, prep.input_size) else torch.float32
    inputs = ModelInputs(read_images, device, prep=prep) if read_images is not None else None
    with _phase("dropout passes"):
        activity = _passes(model, layers, inputs, mask.shape[0], options, device, dtype, dropout=True)
    with _phase("augmentation passes"):
        sensitivity = _passes(model, layers, inputs, mask.shape[0], options, device, dtype, dropout=False)
    rate = collection_rate(mask)
    clusters: dict[str, dict[str, Any]] = {}
    for lv, (level, st) in enumerate(zip(levels, level_stats, strict=True)):
        n_clusters = level.sizes.shape[0]
        support = expected_support(activity.passes, partitions[:, lv], n_clusters) if activity else None
        augmented = (
            expected_support(sensitivity.passes, partitions[:, lv], n_clusters) if sensitivity else None
        )
        entropy = (
            cluster_means(activity.entropy, one_hot(partitions[:, lv], n_clusters))
            if activity and activity.entropy
            else None
        )
        for k in range(n_clusters):
            document = _cluster_document(level, st, rate, boot, support, lv, k)
            document["members"]["augmented_support"] = (
                _r(augmented[0][k, level.members[k]]) if augmented else None
            )
            document["members"]["augmented_support_sd"] = (
                _r(augmented[1][k, level.members[k]]) if augmented else None
            )
            document["predictive_entropy"] = _entropy_at(entropy, k) if entropy else None
            clusters[cluster_id(lv + 1, k)] = document
    with _phase("difference tests"):
        _difference_tests(clusters, partitions, mask, levels, options)
    pruning = None
    if passes_model and options.ablation_random_sets > 0:
        assert model is not None and inputs is not None
        ablated = abl.AblatedModel(model, layers, dtype=dtype)
        try:
            with _phase("causal checks"):
                _causal_checks(
                    clusters, partitions, levels, layers, options, ablated, inputs, progress=progress
                )
            with _phase("pruning curve"):
                pruning = pruning_report(
                    ablated,
                    inputs,
                    mask.shape[0],
                    [st.q_value for st in level_stats],
                    [level.members for level in levels],
                    options.pruning_thresholds,
                    options.alpha,
                    layers,
                    options.pruning_random_sets,
                    options.seed,
                    options.batch_size,
                    labels,
                )
        finally:
            ablated.close()
    correct_across_clusters(clusters, options.alpha)
    return Uncertainty.model_validate(
        {
            "method": _method(options, layers, chance, activity, sensitivity, passes_model, dtype),
            "clusters": clusters,
            "summary": _summary(clusters, levels, level_stats, boot),
            "pruning": pruning,
            "image_entropy": _image_entropy(activity.entropy) if activity and activity.entropy else None,
        }
    )


def _passes(
    model: nn.Module | None,
    layers: Sequence[LayerInfo],
    inputs: ModelInputs | None,
    n_images: int,
    options: PipelineOptions,
    device: torch.device,
    dtype: torch.dtype,
    dropout: bool,
) -> StochasticActivity | None:
    """Dropout passes (model uncertainty) or test-time augmentation (input sensitivity)."""
    samples = options.mc_samples if dropout else options.tta_samples
    if model is None or inputs is None or samples == 0:
        return None
    return stochastic_active_sets(
        model,
        layers,
        inputs,
        n_images,
        options.top_fraction,
        options.ranking,
        samples,
        options.seed,
        device,
        options.batch_size,
        method=None if dropout else "tta",
        dropout_rate=options.injected_dropout_rate,
        prep=inputs.prep,
        dtype=dtype,
    )


def _entropy_at(split: EntropySplit, k: int) -> dict[str, float]:
    return {
        "total": round(float(split.total[k]), 6),
        "aleatoric": round(float(split.aleatoric[k]), 6),
        "epistemic": round(float(split.epistemic[k]), 6),
    }


def _image_entropy(split: EntropySplit) -> dict[str, list[float]]:
    return {"total": _r(split.total), "aleatoric": _r(split.aleatoric), "epistemic": _r(split.epistemic)}


def correct_across_clusters(clusters: dict[str, dict[str, Any]], alpha: float) -> None:
    """Benjamini-Hochberg across the job's clusters for the causal checks (ablation and
    keep-only, each its own family) and the difference tests; `significant` then reads the
    q-value. Each cluster's own p-value is valid; only the count of discoveries needs this."""
    families = [
        [c["causal"] for c in clusters.values() if c["causal"] is not None],
        [c["causal"]["keep_only"] for c in clusters.values() if c["causal"] is not None],
        [c["difference_test"] for c in clusters.values() if c["difference_test"] is not None],
    ]
    for tests in families:
        if not tests:
            continue
        q_values = benjamini_hochberg(np.array([t["p_value"] for t in tests]))
        for test, q in zip(tests, q_values, strict=True):
            test["q_value"] = float(f"{float(q):.4g}")
            test["significant"] = bool(q <= alpha)


def _cluster_document(
    level: LevelGroups,
    st: MembershipStats,
    rate: np.ndarray,
    boot: BootstrapResult | None,
    support: tuple[np.ndarray, np.ndarray] | None,
    lv: int,
    k: int,
) -> dict[str, Any]:
    members = np.flatnonzero(level.members[k])
    return {
        "size": int(level.sizes[k]),
        "members": {
            "neuron": members.tolist(),
            "count": level.counts[k, members].tolist(),
            "lower": _r(st.lower[k, members]),
            "upper": _r(st.upper[k, members]),
            "p_value": _sig(st.p_value[k, members]),
            "q_value": _sig(st.q_value[k, members]),
            "significant": st.significant[k, members].tolist(),
            "chance_p_value": _sig(st.chance_p_value[k, members]),
            "chance_q_value": _sig(st.chance_q_value[k, members]),
            "above_chance": st.above_chance[k, members].tolist(),
            "collection_rate": _r(rate[members]),
            "generic": st.generic[members].tolist(),
            "reliable": st.reliable[k, members].tolist(),
            "inclusion_probability": _r(boot.inclusion[lv][k, members], 4) if boot else None,
            "expected_support": _r(support[0][k, members]) if support else None,
            "expected_support_sd": _r(support[1][k, members]) if support else None,
        },
        "stability": round(float(boot.stability[lv][k]), 6) if boot else None,
        "causal": None,
        "difference_test": None,
    }


def _difference_tests(
    clusters: dict[str, dict[str, Any]],
    partitions: np.ndarray,
    mask: np.ndarray,
    levels: Sequence[LevelGroups],
    options: PipelineOptions,
) -> None:
    for lv, level in enumerate(levels[:-1]):
        assert level.parent is not None
        diff = difference_neurons(list(levels), lv)
        for k in range(level.sizes.shape[0]):
            in_child = partitions[:, lv] == k
            siblings = (partitions[:, lv + 1] == level.parent[k]) & ~in_child
            clusters[cluster_id(lv + 1, k)]["difference_test"] = abl.difference_separation(
                mask[in_child], mask[siblings], diff[k], options.min_support, options.alpha
            )


def _causal_checks(
    clusters: dict[str, dict[str, Any]],
    partitions: np.ndarray,
    levels: Sequence[LevelGroups],
    layers: Sequence[LayerInfo],
    options: PipelineOptions,
    ablated: abl.AblatedModel,
    inputs: ModelInputs,
    sequential: bool = True,
    progress: Progress | None = None,
) -> None:
    """A causal check for every cluster with a non-empty group, on at most
    `ablation_max_images` of its images (a seeded choice); `sequential=False` runs every random
    set (the benchmark's reference for early stopping)."""
    progress = progress or NoProgress()
    progress.start(CAUSAL_STEP, sum(int(level.members.any(axis=1).sum()) for level in levels))
    for lv, level in enumerate(levels):
        for k in range(level.sizes.shape[0]):
            if not level.members[k].any():
                continue
            # seeded per cluster, so one cluster's result does not depend on the others
            rng = np.random.default_rng([options.seed, lv + 1, k])
            images = np.flatnonzero(partitions[:, lv] == k)
            if images.shape[0] > options.ablation_max_images:
                images = np.sort(rng.choice(images, options.ablation_max_images, replace=False))
            result = abl.causal_check(
                ablated,
                inputs(images.tolist()),
                level.members[k],
                layers,
                options.ablation_random_sets,
                options.alpha,
                rng,
                options.batch_size,
                sequential=sequential,
            )
            clusters[cluster_id(lv + 1, k)]["causal"] = result.document(options.alpha)
            progress.advance(CAUSAL_STEP)
    progress.finish(CAUSAL_STEP)


def _method(
    options: PipelineOptions,
    layers: Sequence[LayerInfo],
    chance: np.ndarray,
    activity: StochasticActivity | None,
    sensitivity: StochasticActivity | None,
    passes_model: bool,
    dtype: torch.dtype,
) -> dict[str, Any]:
    ran_passes = activity is not None or sensitivity is not None
    ran_passes = ran_passes or (passes_model and options.ablation_random_sets > 0)
    return {
        "alpha": options.alpha,
        "interval": options.interval,
        "test": "selectivity: one-sided Fisher exact (hypergeometric) test that the neuron is "
        "active in the cluster more often than in the rest of the collection",
        "multiple_testing": "Benjamini-Hochberg across all selected neurons of each cluster; causal "
        "checks and difference tests: Benjamini-Hochberg across the job's clusters",
        "chance_rate": {layer.name: round(float(chance[layer.offset]), 6) for layer in layers},
        "selectivity_test": "hypergeometric P(X >= k), X ~ Hypergeom(all images, actives among "
        "them, cluster size); significant = its BH q-value <= alpha",
        "chance_test": "one-sided exact binomial test of the support against the chance rate; "
        "above_chance = its BH q-value <= alpha",
        "generic": f"active in >= min_support ({options.min_support}) of all images; "
        + ("left out of every group" if options.exclude_generic else "kept in groups (paper's rule)"),
        "bootstrap_resamples": options.bootstrap_resamples,
        "bootstrap": "images resampled within each level-1 cluster; group rule reapplied per level",
        "model_uncertainty": (
            {
                "method": activity.method,
                "samples": int(activity.passes.shape[0]),
                "dropout_rate": activity.dropout_rate,
            }
            if activity
            else None
        ),
        "input_sensitivity": (
            {"method": "tta", "samples": int(sensitivity.passes.shape[0])} if sensitivity else None
        ),
        "causal": (
            {
                "random_sets": options.ablation_random_sets,
                "max_images": options.ablation_max_images,
                "test": "exact rank of the group's mean drop among the random sets' mean drops "
                "(sets drawn uniformly per layer); Benjamini-Hochberg across the job's clusters",
                "output": "logit of each image's unablated top class",
            }
            if passes_model and options.ablation_random_sets > 0
            else None
        ),
        "pass_precision": dtype_name(dtype) if ran_passes else None,
        "seed": options.seed,
    }


def _summary(
    clusters: dict[str, dict[str, Any]],
    levels: Sequence[LevelGroups],
    level_stats: Sequence[MembershipStats],
    boot: BootstrapResult | None,
) -> dict[str, Any]:
    memberships = sum(int(level.members.sum()) for level in levels)
    reliable = sum(
        int((level.members & st.reliable).sum()) for level, st in zip(levels, level_stats, strict=True)
    )
    significant = sum(
        int((level.members & st.significant).sum()) for level, st in zip(levels, level_stats, strict=True)
    )
    above_chance = sum(
        int((level.members & st.above_chance).sum()) for level, st in zip(levels, level_stats, strict=True)
    )
    generic = level_stats[0].generic
    generic_memberships = sum(int((level.members & generic).sum()) for level in levels)
    with_group = [c for c in clusters.values() if c["members"]["neuron"]]
    checked = [c["causal"] for c in clusters.values() if c["causal"] is not None]
    tested = [c["difference_test"] for c in clusters.values() if c["difference_test"] is not None]
    alpha_hit = [c for c in checked if c["significant"]]
    return {
        "memberships": memberships,
        "reliable_share": round(reliable / memberships, 6) if memberships else None,
        "significant_share": round(significant / memberships, 6) if memberships else None,
        "above_chance_share": round(above_chance / memberships, 6) if memberships else None,
        "generic_neurons": int(generic.sum()),
        "generic_memberships": generic_memberships,
        "mean_stability": (
            round(float(np.mean([c["stability"] for c in with_group])), 6) if boot and with_group else None
        ),
        "clusters_checked": len(checked),
        "clusters_with_causal_effect": len(alpha_hit),
        "difference_tests": len(tested),
        "difference_tests_significant": sum(1 for t in tested if t["significant"]),
    }
