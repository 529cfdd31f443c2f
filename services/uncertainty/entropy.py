"""Predictive-entropy decomposition over stochastic dropout passes (Kendall & Gal 2017).

With class probabilities p_t from T passes and their mean p̄, in nats:
  total               H[p̄]                   the entropy of the mean prediction
  expected_entropy    mean_t H[p_t]           the entropy each pass has on its own
  mutual_information  H[p̄] - mean_t H[p_t]    how much the passes disagree; >= 0 (Jensen)

The arithmetic is the same whatever the passes are; what the parts mean is not, and
`interpretation` says which reading holds:
- "epistemic": the passes sample the model's own dropout (MC dropout, Gal & Ghahramani 2016), or
  injected dropout at a rate calibrated on labelled images. Then expected_entropy is the
  aleatoric part (ambiguity in the image that every pass sees) and mutual_information the
  epistemic part (the passes disagree: the model lacks knowledge of such images).
- "sensitivity to feature dropout": dropout injected into a model trained without it, at a rate
  nobody calibrated (post-hoc injection needs a fitted scale, Ledda et al. 2023, who studied
  regression only). Then mutual_information says how far the prediction moves when features
  are dropped, and expected_entropy the mean entropy of those perturbed predictions. Neither is a
  statement about what the model knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Interpretation = Literal["epistemic", "sensitivity to feature dropout"]

MEANINGS: dict[Interpretation, dict[str, str]] = {
    "epistemic": {
        "total": "entropy of the mean predicted class distribution over the dropout passes",
        "expected_entropy": "aleatoric: the mean entropy of each pass, ambiguity in the image itself",
        "mutual_information": "epistemic: the passes disagree, the model lacks knowledge of such images",
    },
    "sensitivity to feature dropout": {
        "total": "entropy of the mean predicted class distribution over the dropout passes",
        "expected_entropy": "the mean entropy of the predictions with features dropped",
        "mutual_information": "how far the prediction moves when features are dropped (sensitivity "
        "to feature dropout; the rate was not calibrated, so not what the model lacks)",
    },
}
"""What each part means under each interpretation (for the contract's descriptions and docs)."""


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats along the last axis; 0 log 0 = 0."""
    return np.asarray(-np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1))


@dataclass(frozen=True)
class EntropySplit:
    """Per image (or per cluster): total = expected_entropy + mutual_information, in nats, and
    what the parts mean (`interpretation`, see the module's docstring)."""

    total: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray
    interpretation: Interpretation


def decompose(probabilities: np.ndarray, interpretation: Interpretation) -> EntropySplit:
    """From class probabilities (passes, images, classes)."""
    p = np.asarray(probabilities, dtype=np.float64)
    total = _entropy(p.mean(axis=0))
    expected = _entropy(p).mean(axis=0)
    # float error can make the difference a hair below zero where the passes agree
    return EntropySplit(total, expected, np.clip(total - expected, 0.0, None), interpretation)


def concatenate(parts: Sequence[EntropySplit]) -> EntropySplit:
    """Splits of consecutive batches as one (all of one interpretation)."""
    interpretations = {part.interpretation for part in parts}
    if len(interpretations) != 1:
        raise ValueError(f"splits of different interpretations: {sorted(interpretations)}")
    return EntropySplit(
        np.concatenate([part.total for part in parts]),
        np.concatenate([part.expected_entropy for part in parts]),
        np.concatenate([part.mutual_information for part in parts]),
        parts[0].interpretation,
    )


def cluster_means(split: EntropySplit, clusters: np.ndarray, n_clusters: int) -> EntropySplit:
    """Mean of each part over each cluster's sampled images. `clusters`: the cluster of each of
    the split's images (the sampled rows' labels); NaN for a cluster with none sampled."""
    clusters = np.asarray(clusters, dtype=np.int64)
    counts = np.bincount(clusters, minlength=n_clusters).astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.bincount(clusters, weights=values, minlength=n_clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)

    return EntropySplit(
        mean(split.total), mean(split.expected_entropy), mean(split.mutual_information), split.interpretation
    )
