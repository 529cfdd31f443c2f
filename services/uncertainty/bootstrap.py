"""Bootstrap stability of neuron groups.

Each resample redraws, with replacement, the images of every level-1 cluster from that cluster
(a bootstrap stratified by the finest clusters, so every coarser cluster is resampled too and the
clustering itself is held fixed). The group rule is then reapplied at every level exactly as the
activation stage applies it. One resample of the whole job is one sparse product: a (clusters x
images) matrix of draw counts times the (images x neurons) active sets; the only Python loop is
over resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from neuron_core.groups import LevelGroups, active_matrix, intersect_children, one_hot


@dataclass(frozen=True)
class BootstrapResult:
    """Per level (index 0 = level 1): inclusion probability (clusters, neurons) of each neuron
    in the cluster's group, and the mean Jaccard index (clusters,) of resampled vs. actual group."""

    resamples: int
    inclusion: list[np.ndarray]
    stability: list[np.ndarray]


def jaccard_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard index of two boolean matrices; two empty sets count as identical."""
    inter = np.count_nonzero(a & b, axis=1)
    union = np.count_nonzero(a | b, axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _draw_counts(
    labels: np.ndarray, order: np.ndarray, starts: np.ndarray, sizes: np.ndarray, rng: np.random.Generator
) -> sp.csr_matrix:
    """(clusters x images) counts of one stratified resample: every image slot of a cluster is
    replaced by a uniform draw from the same cluster."""
    n = labels.shape[0]
    positions = starts[labels] + (rng.random(n) * sizes[labels]).astype(np.int64)
    drawn = order[positions]
    # duplicates of (cluster, image) are summed by the constructor: those are the draw counts
    return sp.csr_matrix((np.ones(n, dtype=np.float32), (labels, drawn)), shape=(sizes.shape[0], n))


def bootstrap_groups(
    partitions: np.ndarray,
    mask: np.ndarray,
    levels: Sequence[LevelGroups],
    min_support: float,
    rule: str,
    resamples: int,
    seed: int,
    exclude: np.ndarray | None = None,
) -> BootstrapResult:
    """Inclusion probabilities and Jaccard stability of every cluster's group (see module doc);
    `exclude` (bool over neurons): neurons the group rule leaves out (generic ones)."""
    labels = np.asarray(partitions[:, 0], dtype=np.int64)
    sizes = np.bincount(labels, minlength=levels[0].sizes.shape[0]).astype(np.int64)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    active = active_matrix(mask)
    ups = [
        one_hot(level.parent, levels[lv + 1].sizes.shape[0])
        for lv, level in enumerate(levels[:-1])
        if level.parent is not None
    ]
    inclusion = [np.zeros(level.members.shape, dtype=np.int32) for level in levels]
    stability = [np.zeros(level.sizes.shape[0], dtype=np.float64) for level in levels]
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        counts = np.asarray((_draw_counts(labels, order, starts, sizes, rng) @ active).todense())
        members = counts >= min_support * levels[0].sizes[:, None]
        if exclude is not None:
            members &= ~exclude
        for lv, level in enumerate(levels):
            if lv > 0:
                if rule == "intersect":
                    parent = levels[lv - 1].parent
                    assert parent is not None  # levels below the top always have parents
                    members = intersect_children(members, parent, level.sizes.shape[0])
                else:
                    counts = ups[lv - 1] @ counts
                    members = counts >= min_support * level.sizes[:, None]
                    if exclude is not None:
                        members &= ~exclude
            inclusion[lv] += members
            stability[lv] += jaccard_rows(members, level.members)
    scale = 1.0 / max(resamples, 1)
    return BootstrapResult(
        resamples,
        [(counts_in * scale).astype(np.float32) for counts_in in inclusion],
        [total * scale for total in stability],
    )
