"""Selectivity: is a neuron active in a cluster more often than in the rest of the collection?

The chance-rate test (stats.binomial_greater_pvalue) asks whether a neuron fires in a cluster more
often than `top_fraction` would by chance. A neuron that fires in most images of the whole
collection passes it in every cluster, so "significant" there says nothing about the concept.
Here the reference is the neuron's own rate outside the cluster: with k actives among the n images
of a cluster and K among all N images, P(X >= k) for X ~ Hypergeom(N, K, n) is the one-sided
Fisher exact test of the 2x2 table (in cluster / rest) x (active / not).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def collection_rate(mask: np.ndarray) -> np.ndarray:
    """Per neuron, the share of all images in which it is active."""
    return np.asarray(mask.mean(axis=0, dtype=np.float64))


def generic_neurons(rate: np.ndarray, min_support: float) -> np.ndarray:
    """Neurons active in at least `min_support` of *all* images: they would join any cluster's
    group by the group rule alone, whatever the cluster shows."""
    return np.asarray(rate >= min_support)


def selectivity_pvalue(
    counts: np.ndarray, sizes: np.ndarray, totals: np.ndarray, n_images: int
) -> np.ndarray:
    """One-sided Fisher exact p-values, (clusters x neurons): `counts` actives of a cluster of
    `sizes` images, against `totals` (per neuron) actives among `n_images` images."""
    k = np.asarray(counts, dtype=np.int64)
    n = np.broadcast_to(np.asarray(sizes, dtype=np.int64)[:, None], k.shape)
    big_k = np.broadcast_to(np.asarray(totals, dtype=np.int64)[None, :], k.shape)
    return np.asarray(stats.hypergeom.sf(k - 1, n_images, big_k, n), dtype=np.float64).clip(0.0, 1.0)
