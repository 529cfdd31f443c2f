"""Paired tests of a change between two models seen on the same images (docs/comparison.md).

The null is "same model behaviour": on every image, the two models' activities of a neuron are
exchangeable, so swapping them (a sign flip of each image's difference b - a) leaves their
distribution unchanged. Only discordant images (active in one model, not the other) can flip,
so the permutation distribution is exact and needs no draws:

- support change in a concept: b_only ~ Binomial(a_only + b_only, 1/2), the exact McNemar test;
- selectivity change (support in the concept minus the rate in the rest of the collection): the
  concept's and the rest's discordant images flip independently, two binomials.

Both report two-sided mid-p values (Lancaster 1961): P(more extreme) + P(as extreme) / 2. The
exact conditional McNemar test is conservative, far below alpha with few discordant images; its
mid-p version holds the level about as nominally (Fagerland, Lydersen & Laake 2013,
"The McNemar test for binary matched-pairs data: mid-p and asymptotic are better than exact
conditional"); benchmarks/comparison_calibration.py measures it. Pure numpy and scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# Below the spacing of the selectivity statistic's values (at least 2 / (n_concept * n_rest))
# and far above float error: "as extreme" means equal up to this.
TOLERANCE = 1e-10


def support_change_p(a_only: np.ndarray, b_only: np.ndarray) -> np.ndarray:
    """Two-sided mid-p of b_only - a_only under Binomial(a_only + b_only, 1/2); 1 where no image
    is discordant (nothing changed, nothing to test)."""
    a_only = np.asarray(a_only, dtype=np.int64)
    b_only = np.asarray(b_only, dtype=np.int64)
    m = a_only + b_only
    low, high = np.minimum(a_only, b_only), np.maximum(a_only, b_only)
    tied = low == high
    # P(|2X - m| >= |d|): both tails; with d = 0 that is every outcome.
    at_least = np.where(tied, 1.0, stats.binom.cdf(low, m, 0.5) + stats.binom.sf(high - 1, m, 0.5))
    equal = np.where(
        tied, stats.binom.pmf(low, m, 0.5), stats.binom.pmf(low, m, 0.5) + stats.binom.pmf(high, m, 0.5)
    )
    p = np.clip(at_least - 0.5 * equal, 0.0, 1.0)
    return np.asarray(np.where(m == 0, 1.0, p), dtype=np.float64)


def smallest_support_p(images: int) -> float:
    """The smallest support_change_p a concept of `images` images can give (all of them
    discordant, all one way): 0.5 ** images."""
    return float(0.5**images)


def _at_least(tau: float, m_concept: int, n_concept: int, m_rest: int, n_rest: int) -> float:
    """P(|T| >= tau) for T = (2U - m_c) / n_c - (2V - m_r) / n_r, U ~ Bin(m_c, 1/2) and
    V ~ Bin(m_r, 1/2) independent: for each U, V's two tails in closed form."""
    if tau <= 0:
        return 1.0
    u = np.arange(m_concept + 1)
    weights = stats.binom.pmf(u, m_concept, 0.5)
    centre = (2 * u - m_concept) / n_concept
    # (2V - m_r) / n_r <= centre - tau  or  >= centre + tau
    below = np.floor((n_rest * (centre - tau) + m_rest) / 2)
    above = np.ceil((n_rest * (centre + tau) + m_rest) / 2)
    tails = stats.binom.cdf(below, m_rest, 0.5) + stats.binom.sf(above - 1, m_rest, 0.5)
    return float(np.clip(np.dot(weights, tails), 0.0, 1.0))


def selectivity_change_p(
    concept_diff: int,
    concept_discordant: int,
    n_concept: int,
    rest_diff: int,
    rest_discordant: int,
    n_rest: int,
) -> float:
    """Two-sided mid-p of the change in selectivity, T = concept_diff / n_concept - rest_diff /
    n_rest (each `diff` = b_only - a_only among that part's images), under independent sign
    flips of every discordant image; 1 where no image is discordant."""
    if concept_discordant == 0 and rest_discordant == 0:
        return 1.0
    observed = abs(concept_diff / n_concept - rest_diff / n_rest)
    args = (concept_discordant, n_concept, rest_discordant, n_rest)
    at_least = _at_least(observed - TOLERANCE, *args)
    beyond = _at_least(observed + TOLERANCE, *args)
    return float(min(1.0, 0.5 * (at_least + beyond)))


@dataclass(frozen=True)
class PairedTests:
    """One concept's tests for some neurons (columns in the order asked)."""

    a_only: np.ndarray  # concept images active in A and not in B
    b_only: np.ndarray
    support_a: np.ndarray
    support_b: np.ndarray
    support_p: np.ndarray
    selectivity_a: np.ndarray | None  # None when the concept holds every image
    selectivity_b: np.ndarray | None
    selectivity_p: np.ndarray | None


class PairedActivity:
    """Two models' active sets over the same images (bool images x neurons, same rows), with
    whole-collection counts per neuron, so a concept's rest is the total minus the concept."""

    def __init__(self, mask_a: np.ndarray, mask_b: np.ndarray) -> None:
        if mask_a.shape != mask_b.shape:
            raise ValueError(f"active sets of different shapes: {mask_a.shape} and {mask_b.shape}")
        self.a, self.b = mask_a, mask_b
        self.images = mask_a.shape[0]
        self.active_a = mask_a.sum(axis=0, dtype=np.int64)
        self.active_b = mask_b.sum(axis=0, dtype=np.int64)
        self.a_only = (mask_a & ~mask_b).sum(axis=0, dtype=np.int64)
        self.b_only = (mask_b & ~mask_a).sum(axis=0, dtype=np.int64)

    def family(self, rows: np.ndarray, min_support: float) -> np.ndarray:
        """The neurons a concept's tests cover: mean support over the two models at least
        min_support / 2. That holds both models' groups (a member's support is at least
        min_support in its model), and, unlike the union of the groups, it does not change when
        an image's two activities are swapped, so choosing it leaves the null intact: the union
        would pick the pairs that noise pushed over min_support in one model, and test them."""
        pooled = self.a[rows].sum(axis=0, dtype=np.int64) + self.b[rows].sum(axis=0, dtype=np.int64)
        return np.flatnonzero(pooled >= min_support * rows.shape[0] - 1e-9)

    def test(self, rows: np.ndarray, neurons: np.ndarray) -> PairedTests:
        """The concept (`rows`) against the rest of the images, for `neurons`."""
        a, b = self.a[np.ix_(rows, neurons)], self.b[np.ix_(rows, neurons)]
        size, rest = rows.shape[0], self.images - rows.shape[0]
        a_only = (a & ~b).sum(axis=0, dtype=np.int64)
        b_only = (b & ~a).sum(axis=0, dtype=np.int64)
        count_a, count_b = a.sum(axis=0, dtype=np.int64), b.sum(axis=0, dtype=np.int64)
        selectivity = None
        if rest > 0:
            rest_a_only = self.a_only[neurons] - a_only
            rest_b_only = self.b_only[neurons] - b_only
            p = np.array(
                [
                    selectivity_change_p(
                        int(b_only[k] - a_only[k]),
                        int(a_only[k] + b_only[k]),
                        size,
                        int(rest_b_only[k] - rest_a_only[k]),
                        int(rest_a_only[k] + rest_b_only[k]),
                        rest,
                    )
                    for k in range(neurons.shape[0])
                ],
                dtype=np.float64,
            )
            selectivity = (
                count_a / size - (self.active_a[neurons] - count_a) / rest,
                count_b / size - (self.active_b[neurons] - count_b) / rest,
                p,
            )
        return PairedTests(
            a_only,
            b_only,
            count_a / size,
            count_b / size,
            support_change_p(a_only, b_only),
            *(selectivity or (None, None, None)),
        )
