"""Stability of the clustering itself: how much of each cluster survives re-clustering when the
collection is resampled.

Each resample draws round(`fraction` * n) images without replacement (a bootstrap with
replacement would hand FINCH exact duplicates, which it links first, so every drawn image would
keep its copies and the clusters would look more stable than they are) and runs the very FINCH
clustering of the embed_cluster stage (`shared.pipeline.clustering`, same `ann_threshold` and seed) on
their caption embeddings. Every original cluster, at every level, restricted to the drawn
images, is matched with the cluster of the resample, at any of its levels, that has the highest
Jaccard index |A ∩ B| / |A ∪ B| with it: a concept that FINCH merges one level later in the
resample still counts as found. The score of a cluster is its mean best-match Jaccard over the
resamples that drew at least one of its images.

This is the cluster-wise stability of Hennig (2007), "Cluster-wise assessment of cluster
stability", Computational Statistics & Data Analysis 52(1), with subsetting as the resampling
scheme (R's `fpc::clusterboot` reads a mean of 0.75 or more as a stable cluster and one below
0.6 as a cluster not to trust). Small clusters have a lower ceiling: FINCH makes no singleton
clusters, so a 2-image cluster of which one image was drawn scores at most 1/2, and at fraction
0.8 even a perfectly stable 2-image cluster averages at most about 0.83.

One resample's matching is one sparse product, (original clusters x drawn images) one-hot times
(drawn images x resampled clusters) one-hot, all levels stacked; the only Python loop is over
resamples, and FINCH dominates the cost.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from shared.pipeline.clustering import finch_partitions

DEFAULT_FRACTION = 0.8


@dataclass(frozen=True)
class ClusteringStability:
    """Per level (index 0 = level 1), per cluster: `jaccard` is the mean best-match Jaccard index
    over the resamples that drew at least one of its images (NaN where none did), `present` the
    number of those resamples."""

    resamples: int
    fraction: float
    seed: int
    ann_threshold: int
    jaccard: list[np.ndarray]
    present: list[np.ndarray]


def stacked_one_hot(partitions: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """(clusters of all levels x images) membership, and the offset of each level's first row
    (one more than the levels: the last entry is the number of rows)."""
    counts = partitions.max(axis=0).astype(np.int64) + 1 if partitions.size else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n, levels = partitions.shape
    rows = (partitions.astype(np.int64) + offsets[:-1]).ravel(order="F")
    cols = np.tile(np.arange(n, dtype=np.int64), levels)
    data = np.ones(rows.shape[0], dtype=np.float64)
    return sp.csr_matrix((data, (rows, cols)), shape=(int(offsets[-1]), n)), offsets


def best_match_jaccard(original: sp.csr_matrix, resampled: sp.csr_matrix) -> np.ndarray:
    """For each row (a cluster as a set of images) of `original`, the highest Jaccard index with
    any row of `resampled` (same image columns); NaN for an empty row."""
    sizes_a = np.asarray(original.sum(axis=1)).ravel()
    sizes_b = np.asarray(resampled.sum(axis=1)).ravel()
    overlap = (original @ resampled.T).tocsr()  # |A ∩ B| where nonzero; zero overlap is Jaccard 0
    overlap.sum_duplicates()
    rows = np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))
    union = sizes_a[rows] + sizes_b[overlap.indices] - overlap.data
    scores = sp.csr_matrix((overlap.data / union, overlap.indices, overlap.indptr), shape=overlap.shape)
    best = scores.max(axis=1).toarray().ravel()
    return np.where(sizes_a > 0, best, np.nan)


def clustering_stability(
    embeddings: np.ndarray,
    partitions: np.ndarray,
    resamples: int,
    fraction: float = DEFAULT_FRACTION,
    seed: int = 0,
    ann_threshold: int = 50_000,
) -> ClusteringStability:
    """Mean best-match Jaccard of every cluster of `partitions` (the job's FINCH partitions of
    `embeddings`, made with this `ann_threshold` and `seed`) over `resamples` subsamples of
    round(`fraction` * n) images re-clustered with FINCH (see the module doc)."""
    n = embeddings.shape[0]
    if embeddings.ndim != 2 or partitions.ndim != 2 or partitions.shape[0] != n:
        raise ValueError(
            f"embeddings {embeddings.shape} and partitions {partitions.shape} must be (images x dims) "
            "and (images x levels) over the same images"
        )
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction is {fraction}: the share of images per resample must be in (0, 1]")
    if resamples < 0:
        raise ValueError(f"resamples is {resamples}: it must be 0 or more")
    original, offsets = stacked_one_hot(np.asarray(partitions))
    drawn = max(1, round(fraction * n)) if n else 0
    totals = np.zeros(original.shape[0], dtype=np.float64)
    present = np.zeros(original.shape[0], dtype=np.int32)
    rng = np.random.default_rng(seed)
    for _ in range(resamples if n else 0):
        # sorted, so the images keep their order (FINCH breaks ties by index) and fraction 1.0
        # reproduces the job's clustering exactly
        rows = np.sort(rng.choice(n, size=drawn, replace=False))
        resampled, _ = stacked_one_hot(finch_partitions(embeddings[rows], ann_threshold, seed))
        best = best_match_jaccard(original[:, rows], resampled)
        found = ~np.isnan(best)
        totals[found] += best[found]
        present += found
    mean = np.where(present > 0, totals / np.maximum(present, 1), np.nan)
    levels = list(itertools.pairwise(offsets))
    return ClusteringStability(
        resamples=resamples,
        fraction=fraction,
        seed=seed,
        ann_threshold=ann_threshold,
        jaccard=[mean[a:b] for a, b in levels],
        present=[present[a:b] for a, b in levels],
    )
