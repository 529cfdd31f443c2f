"""Per-membership statistics: support intervals, the selectivity test (selectivity.py) and the
chance-rate binomial test, each with Benjamini–Hochberg (scipy's `false_discovery_control`).

Everything is vectorised over (clusters x neurons) arrays, so a 25,000-image job's few million
(cluster, neuron) pairs take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from neuron_core.active_sets import active_count
from neuron_core.layers import LayerInfo
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
