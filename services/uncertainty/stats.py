"""Per-membership statistics: support intervals, the selectivity test (selectivity.py) and the
chance-rate binomial test, each with Benjamini–Hochberg (scipy's `false_discovery_control`).

Everything is vectorised over (clusters x neurons) arrays, so a 25,000-image job's few million
(cluster, neuron) pairs take seconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from neuron_core.active_sets import active_count
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty.selectivity import generic_neurons, hypergeom_upper_tail

IntervalMethod = Literal["wilson", "clopper_pearson"]


def wilson_interval(k: np.ndarray, n: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes in n trials at confidence 1 - alpha."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def clopper_pearson_interval(k: np.ndarray, n: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper–Pearson) interval: never below nominal coverage, often above."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # beta(0, .) at the edges is replaced below
        lower = np.where(k > 0, stats.beta.ppf(alpha / 2.0, k, n - k + 1.0), 0.0)
        upper = np.where(k < n, stats.beta.ppf(1.0 - alpha / 2.0, k + 1.0, n - k), 1.0)
    return lower, upper


def proportion_interval(
    k: np.ndarray, n: np.ndarray, alpha: float, method: IntervalMethod = "clopper_pearson"
) -> tuple[np.ndarray, np.ndarray]:
    if method == "wilson":
        return wilson_interval(k, n, alpha)
    if method == "clopper_pearson":
        return clopper_pearson_interval(k, n, alpha)
    raise ValueError(f"unknown interval method {method!r}")


def binomial_greater_pvalue(k: np.ndarray, n: np.ndarray, chance: np.ndarray) -> np.ndarray:
    """One-sided exact binomial test P(X >= k) for X ~ Binomial(n, chance)."""
    return np.asarray(stats.binom.sf(np.asarray(k) - 1, n, chance), dtype=np.float64)


def benjamini_hochberg(p_values: np.ndarray, axis: int = -1) -> np.ndarray:
    """BH-adjusted p-values (q-values), each slice along `axis` a family of its own."""
    return np.asarray(stats.false_discovery_control(p_values, axis=axis, method="bh"), dtype=np.float64)


def chance_rates(layers: Sequence[LayerInfo], top_fraction: float, ranking: str) -> np.ndarray:
    """Per neuron, the share of images in which it would be active by chance: exactly the
    share of its ranking pool that the activation stage marks active (k of channels)."""
    total = sum(layer.channels for layer in layers)
    if ranking == "global":
        return np.full(total, active_count(total, top_fraction) / total)
    return np.concatenate(
        [
            np.full(layer.channels, active_count(layer.channels, top_fraction) / layer.channels)
            for layer in layers
        ]
    )


@dataclass(frozen=True)
class MembershipStats:
    """One level's statistics, (clusters, neurons) arrays; intervals are NaN off the groups."""

    lower: np.ndarray
    upper: np.ndarray
    p_value: np.ndarray  # selectivity: one-sided Fisher test against the rest of the collection
    q_value: np.ndarray  # its BH across all selected neurons of a cluster
    significant: np.ndarray  # selective: q <= alpha
    chance_p_value: np.ndarray  # one-sided binomial test against the chance rate
    chance_q_value: np.ndarray  # its BH across all selected neurons of a cluster
    above_chance: np.ndarray  # chance_q <= alpha
    reliable: np.ndarray  # interval lower bound >= min_support
    generic: np.ndarray  # (neurons,): active in >= min_support of all images


def membership_stats(
    counts: np.ndarray,
    sizes: np.ndarray,
    members: np.ndarray,
    chance: np.ndarray,
    alpha: float,
    min_support: float,
    method: IntervalMethod = "clopper_pearson",
    totals: np.ndarray | None = None,
    n_images: int | None = None,
) -> MembershipStats:
    """Intervals for the group members; tests and q-values for every (cluster, neuron), because
    the family a cluster's group was chosen from is all neurons, not only the chosen ones.

    `totals` (actives per neuron among all `n_images` images) is the selectivity test's
    reference; without it, `counts` is taken to be a partition of the whole collection (a level)."""
    if totals is None or n_images is None:
        totals, n_images = counts.sum(axis=0), int(np.sum(sizes))
    n = np.broadcast_to(np.asarray(sizes, dtype=np.int64)[:, None], counts.shape)
    chance_p = binomial_greater_pvalue(counts, n, np.broadcast_to(chance, counts.shape))
    chance_q = benjamini_hochberg(chance_p, axis=1)
    p_value = hypergeom_upper_tail(counts, sizes, totals, n_images)
    q_value = benjamini_hochberg(p_value, axis=1)
    lower = np.full(counts.shape, np.nan)
    upper = np.full(counts.shape, np.nan)
    lo, hi = proportion_interval(counts[members], n[members], alpha, method)
    lower[members], upper[members] = lo, hi
    return MembershipStats(
        lower=lower,
        upper=upper,
        p_value=p_value,
        q_value=q_value,
        significant=q_value <= alpha,
        chance_p_value=chance_p,
        chance_q_value=chance_q,
        above_chance=chance_q <= alpha,
        reliable=np.nan_to_num(lower, nan=0.0) >= min_support,
        generic=generic_neurons(np.asarray(totals) / n_images, min_support),
    )


EXACT_ARRANGEMENTS = 20_000  # up to this many, a permutation p-value is computed exactly
PERMUTATION_DRAWS = 9_999


@dataclass(frozen=True)
class PermutationTest:
    p_value: float
    min_p_value: float  # the smallest p-value these values could give
    exact: bool


def mean_difference_test(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> PermutationTest:
    """One-sided permutation test that `first`'s mean exceeds `second`'s, over every way of
    choosing len(first) of the pooled values: exact where there are at most
    EXACT_ARRANGEMENTS ways, else PERMUTATION_DRAWS seeded draws ((1 + hits) / (1 + draws)).
    With the pool's total fixed, the difference of means grows with the first group's sum, so
    the test compares sums."""
    pooled = np.concatenate([first, second]).astype(np.float64)
    t, n = first.shape[0], pooled.shape[0]
    observed = float(first.sum())
    tolerance = 1e-9 * max(1.0, float(np.abs(pooled).sum()))
    arrangements = math.comb(n, t)
    if arrangements <= EXACT_ARRANGEMENTS:
        sums = np.fromiter(
            (pooled[list(chosen)].sum() for chosen in itertools.combinations(range(n), t)),
            dtype=np.float64,
            count=arrangements,
        )
        p_value = float(np.count_nonzero(sums >= observed - tolerance)) / arrangements
        top = float(np.count_nonzero(sums >= sums.max() - tolerance)) / arrangements
        return PermutationTest(p_value, top, exact=True)
    keys = rng.random((PERMUTATION_DRAWS, n))
    chosen = np.argpartition(keys, t - 1, axis=1)[:, :t]
    sums = pooled[chosen].sum(axis=1)
    hits = int(np.count_nonzero(sums >= observed - tolerance))
    return PermutationTest((1 + hits) / (1 + PERMUTATION_DRAWS), 1 / (1 + PERMUTATION_DRAWS), exact=False)


def welch_interval(first: np.ndarray, second: np.ndarray, alpha: float) -> tuple[float, float] | None:
    """Welch's t interval of mean(first) - mean(second) at 1 - alpha; None for fewer than two
    values on either side."""
    if first.shape[0] < 2 or second.shape[0] < 2:
        return None
    va, vb = first.var(ddof=1) / first.shape[0], second.var(ddof=1) / second.shape[0]
    se = math.sqrt(va + vb)
    difference = float(first.mean() - second.mean())
    if se == 0:
        return difference, difference
    dof = (va + vb) ** 2 / (va**2 / (first.shape[0] - 1) + vb**2 / (second.shape[0] - 1))
    half = float(stats.t.ppf(1 - alpha / 2, dof)) * se
    return difference - half, difference + half


def can_be_reliable(
    sizes: np.ndarray, alpha: float, min_support: float, method: IntervalMethod
) -> np.ndarray:
    """Per cluster size, whether any count can clear min_support at 1 - alpha: n of n is the
    best a cluster of n images can show (Clopper-Pearson needs 6 images at 0.5 and alpha 0.05)."""
    n = np.asarray(sizes, dtype=np.int64)
    lower, _ = proportion_interval(n, n, alpha, method)
    return np.asarray(lower >= min_support)
