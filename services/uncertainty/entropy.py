"""Predictive-entropy decomposition over stochastic (dropout) passes (Kendall & Gal 2017).

With class probabilities p_t from T passes and their mean p̄:
  total     H[p̄]                   everything the model is unsure of
  aleatoric mean_t H[p_t]           what every pass is unsure of (ambiguity in the image)
  epistemic H[p̄] - mean_t H[p_t]    mutual information: the passes disagree (the model lacks
                                     knowledge); >= 0 by Jensen's inequality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats along the last axis; 0 log 0 = 0."""
    return np.asarray(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1))


@dataclass(frozen=True)
class EntropySplit:
    """Per image (or cluster): total = aleatoric + epistemic, in nats."""

    total: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray


def decompose(probabilities: np.ndarray) -> EntropySplit:
    """From class probabilities (passes, images, classes)."""
    p = np.asarray(probabilities, dtype=np.float64)
    total = _entropy(p.mean(axis=0))
    aleatoric = _entropy(p).mean(axis=0)
    # float error can make the difference a hair below zero where the passes agree
    return EntropySplit(total, aleatoric, np.clip(total - aleatoric, 0.0, None))


def cluster_means(split: EntropySplit, membership: sp.csr_matrix) -> EntropySplit:
    """Mean of each component over each cluster's images (`membership`: clusters x images)."""
    sizes = np.asarray(membership.sum(axis=1)).ravel()

    def mean(values: np.ndarray) -> np.ndarray:
        return np.asarray(membership @ values) / np.maximum(sizes, 1)

    return EntropySplit(mean(split.total), mean(split.aleatoric), mean(split.epistemic))
