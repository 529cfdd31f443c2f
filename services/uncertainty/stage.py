"""Uncertainty stage over a job's store: reads partitions.npy, the activation shards and the
stored groups (`groups.json`), writes `uncertainty.json` (what `assemble_hierarchy` merges into
hierarchy.json).

- `run_uncertainty(store, options, target=None, read_bytes=None)`: the one entry, called by the
  Celery task and the embedded runner; the model passes (Monte Carlo dropout / test-time
  augmentation, causal checks, pruning report) run when a target model and an image reader
  are given.
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
from neuron_core.groups import LevelGroups, difference_neurons, stored_groups
from neuron_core.layers import LayerInfo
from neuron_core.target_model import LoadedModel
from services.uncertainty import ablation as abl
from services.uncertainty.bootstrap import BootstrapResult, bootstrap_groups
from services.uncertainty.model_inputs import ImageSource, ModelInputs
from services.uncertainty.model_uncertainty import (
    StochasticActivity,
    expected_support,
    stochastic_active_sets,
)
from services.uncertainty.stats import MembershipStats, chance_rates, membership_stats
from shared import artifacts
from shared.contracts.groups import Groups
from shared.contracts.uncertainty import Uncertainty
from shared.ingest import decode_image
from shared.options import PipelineOptions
from shared.storage import Store, get_json, get_npy
from shared.tree import cluster_id

log = logging.getLogger(__name__)

PERMUTATIONS = 9999
PHASE_MESSAGE = "uncertainty phase %s: %.3f s"


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


def run_uncertainty(
    store: Store,
    options: PipelineOptions,
    target: LoadedModel | None = None,
    read_bytes: Callable[[dict[str, Any]], bytes] | None = None,
) -> Uncertainty:
    """Statistics for every membership, cluster and the job into `uncertainty.json`; with a
    target model and `read_bytes` (a manifest entry's image bytes), the model passes too."""
    image_ids = [row["image_id"] for row in artifacts.read_usable_captions(store)]
    active = read_active_sets(store, image_ids)
    partitions = get_npy(store, artifacts.PARTITIONS)
    levels = stored_groups(artifacts.read_model(store, artifacts.GROUPS, Groups), partitions, active.mask)
    read_images = None
    if target is not None and read_bytes is not None:
        read_images = manifest_image_reader(get_json(store, artifacts.MANIFEST), image_ids, read_bytes)
    uncertainty = compute_uncertainty(
        partitions,
        active.mask,
        levels,
        active.layers,
        options,
        target.module if target else None,
        read_images,
        target.device if target else None,
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
) -> Uncertainty:
    """The uncertainty.json document from partitions (images x levels), active sets and the
    groups of every level."""
    chance = chance_rates(layers, options.top_fraction, options.ranking)
    with _phase("statistics"):
        level_stats = [
            membership_stats(
                lv.counts, lv.sizes, lv.members, chance, options.alpha, options.min_support, options.interval
            )
            for lv in levels
        ]
    with _phase("bootstrap"):
        boot = _bootstrap(partitions, mask, levels, options)
    passes_model = model is not None and read_images is not None
    device = device or torch.device("cpu")
    inputs = ModelInputs(read_images, device) if read_images is not None else None
    activity: StochasticActivity | None = None
    if passes_model and options.mc_samples > 0:
        assert model is not None and inputs is not None
        with _phase("stochastic passes"):
            activity = stochastic_active_sets(
                model,
                layers,
                inputs,
                mask.shape[0],
                options.top_fraction,
                options.ranking,
                options.mc_samples,
                options.seed,
                device,
                options.batch_size,
            )
    clusters: dict[str, dict[str, Any]] = {}
    for lv, (level, st) in enumerate(zip(levels, level_stats, strict=True)):
        support = (
            expected_support(activity.passes, partitions[:, lv], level.sizes.shape[0]) if activity else None
        )
        for k in range(level.sizes.shape[0]):
            clusters[cluster_id(lv + 1, k)] = _cluster_document(level, st, boot, support, lv, k)
    with _phase("difference tests"):
        _difference_tests(clusters, partitions, mask, levels, options)
    pruning = None
    if passes_model and options.ablation_random_sets > 0:
        assert model is not None and inputs is not None
        ablated = abl.AblatedModel(model, layers)
        try:
            with _phase("causal checks"):
                _causal_checks(clusters, partitions, levels, layers, options, ablated, inputs)
            significant = np.zeros(mask.shape[1], dtype=bool)
            for level, st in zip(levels, level_stats, strict=True):
                significant |= (level.members & st.significant).any(axis=0)
            with _phase("pruning report"):
                pruning = pruning_report(ablated, inputs, mask.shape[0], ~significant, layers, options)
        finally:
            ablated.close()
    return Uncertainty.model_validate(
        {
            "method": _method(options, layers, chance, activity, passes_model),
            "clusters": clusters,
            "summary": _summary(clusters, levels, level_stats, boot),
            "pruning": pruning,
        }
    )


def _bootstrap(
    partitions: np.ndarray, mask: np.ndarray, levels: Sequence[LevelGroups], options: PipelineOptions
) -> BootstrapResult | None:
    if options.bootstrap_resamples <= 0:
        return None
    return bootstrap_groups(
        partitions,
        mask,
        levels,
        options.min_support,
        options.group_rule,
        options.bootstrap_resamples,
        options.seed,
    )


def _cluster_document(
    level: LevelGroups,
    st: MembershipStats,
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
) -> None:
    """A causal check for every cluster with a non-empty group, on at most
    `ablation_max_images` of its images (a seeded choice)."""
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
            )
            clusters[cluster_id(lv + 1, k)]["causal"] = result.document(options.alpha)


def pruning_report(
    ablated: abl.AblatedModel,
    inputs: ModelInputs,
    n_images: int,
    prune: np.ndarray,
    layers: Sequence[LayerInfo],
    options: PipelineOptions,
) -> dict[str, Any]:
    """Zero the `prune` neurons on the whole collection, next to as many random ones per layer."""
    rng = np.random.default_rng([options.seed, 0])
    randoms = abl.matched_random_sets(prune, layers, options.pruning_random_sets, rng)
    keeps = np.vstack([np.ones((1, prune.shape[0]), dtype=bool), ~prune[None], ~randoms])
    n_variants = keeps.shape[0]
    outputs: list[list[torch.Tensor]] = [[] for _ in range(n_variants)]
    if prune.any():
        for start in range(0, n_images, options.batch_size):
            rows = list(range(start, min(start + options.batch_size, n_images)))
            m = len(rows)
            logits = abl.masked_logits(
                ablated,
                ablated.starts(inputs(rows)),
                keeps,
                np.tile(np.arange(m), n_variants),
                np.repeat(np.arange(n_variants), m),
                options.batch_size,
            )
            for v in range(n_variants):
                outputs[v].append(logits[v * m : (v + 1) * m])
    report: dict[str, Any] = {
        "neurons_pruned": int(prune.sum()),
        "share_pruned": round(float(prune.mean()), 6),
        "images": n_images,
        "pruned": None,
        "random": [],
    }
    if prune.any():
        base = torch.cat(outputs[0])
        report["pruned"] = abl.output_change(base, torch.cat(outputs[1]))
        report["random"] = [abl.output_change(base, torch.cat(o)) for o in outputs[2:]]
    return report


def _method(
    options: PipelineOptions,
    layers: Sequence[LayerInfo],
    chance: np.ndarray,
    activity: StochasticActivity | None,
    passes_model: bool,
) -> dict[str, Any]:
    return {
        "alpha": options.alpha,
        "interval": options.interval,
        "test": "one-sided exact binomial test of support against the chance rate",
        "multiple_testing": "Benjamini-Hochberg across all selected neurons of each cluster",
        "chance_rate": {layer.name: round(float(chance[layer.offset]), 6) for layer in layers},
        "bootstrap_resamples": options.bootstrap_resamples,
        "bootstrap": "images resampled within each level-1 cluster; group rule reapplied per level",
        "model_uncertainty": (
            {"method": activity.method, "samples": int(activity.passes.shape[0])} if activity else None
        ),
        "causal": (
            {
                "random_sets": options.ablation_random_sets,
                "max_images": options.ablation_max_images,
                "permutations": PERMUTATIONS,
                "output": "logit of each image's unablated top class",
            }
            if passes_model and options.ablation_random_sets > 0
            else None
        ),
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
    with_group = [c for c in clusters.values() if c["members"]["neuron"]]
    checked = [c["causal"] for c in clusters.values() if c["causal"] is not None]
    tested = [c["difference_test"] for c in clusters.values() if c["difference_test"] is not None]
    alpha_hit = [c for c in checked if c["significant"]]
    return {
        "memberships": memberships,
        "reliable_share": round(reliable / memberships, 6) if memberships else None,
        "significant_share": round(significant / memberships, 6) if memberships else None,
        "mean_stability": (
            round(float(np.mean([c["stability"] for c in with_group])), 6) if boot and with_group else None
        ),
        "clusters_checked": len(checked),
        "clusters_with_causal_effect": len(alpha_hit),
        "difference_tests": len(tested),
        "difference_tests_significant": sum(1 for t in tested if t["significant"]),
    }
