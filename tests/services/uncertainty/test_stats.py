"""Membership statistics against ground truth: exact coverage, scipy's BH, exact tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neuron_atlas_client.options import PipelineOptions
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty.selectivity import hypergeom_upper_tail
from services.uncertainty.stats import (
    benjamini_hochberg,
    binomial_greater_pvalue,
    chance_rates,
    membership_stats,
    proportion_interval,
)


@pytest.mark.parametrize(
    ("method", "low", "high"), [("wilson", 0.935, 0.965), ("clopper_pearson", 0.95, 0.99)]
)
def test_interval_coverage_is_near_nominal_by_simulation(method: str, low: float, high: float) -> None:
    rng = np.random.default_rng(0)
    coverages = []
    for n in (15, 40, 120):
        for p in (0.1, 0.3, 0.5, 0.75):
            k = rng.binomial(n, p, size=4000)
            lo, hi = proportion_interval(k, np.full_like(k, n), 0.05, method)  # type: ignore[arg-type]
            coverages.append(np.mean((lo <= p) & (p <= hi)))
    # Wilson is close to nominal on average; Clopper–Pearson never falls below it
    assert low <= np.mean(coverages) <= high
    if method == "clopper_pearson":
        assert min(coverages) >= 0.94  # simulation noise only


def test_interval_narrows_with_more_images_and_contains_the_estimate() -> None:
    lo_small, hi_small = proportion_interval(np.array([6]), np.array([10]), 0.05)
    lo_big, hi_big = proportion_interval(np.array([600]), np.array([1000]), 0.05)
    assert hi_big - lo_big < (hi_small - lo_small) / 5
    assert lo_big[0] < 0.6 < hi_big[0]


def test_benjamini_hochberg_matches_scipy_false_discovery_control() -> None:
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=(20, 150)), rng.uniform(0, 1e-3, size=(20, 30))], axis=1)
    p[3, 5] = p[3, 6]  # ties
    ours = benjamini_hochberg(p, axis=1)
    np.testing.assert_allclose(ours, stats.false_discovery_control(p, axis=1, method="bh"), rtol=1e-12)
    np.testing.assert_allclose(
        benjamini_hochberg(p.T, axis=0), stats.false_discovery_control(p.T, axis=0), rtol=1e-12
    )


def test_binomial_test_is_the_exact_one_sided_test() -> None:
    for k, n, p0 in [(7, 10, 0.1), (0, 5, 0.3), (30, 30, 0.5)]:
        expected = stats.binomtest(k, n, p0, alternative="greater").pvalue
        assert binomial_greater_pvalue(np.array(k), np.array(n), np.array(p0)) == pytest.approx(expected)


def test_chance_rate_is_the_active_share_of_each_ranking_pool() -> None:
    layers = [LayerInfo("a", 64, 0), LayerInfo("b", 5, 64)]
    per_layer = chance_rates(layers, 0.1, "per_layer")
    assert per_layer[0] == pytest.approx(6 / 64) and per_layer[-1] == pytest.approx(1 / 5)
    assert np.all(chance_rates(layers, 0.1, "global") == pytest.approx(7 / 69))


def exact_coverage(method: str, n: int, p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Coverage of the interval at each true p: the binomial probability of the k it covers."""
    k = np.arange(n + 1)
    lo, hi = proportion_interval(k, np.full(n + 1, n), alpha, method)  # type: ignore[arg-type]
    covers = (lo[:, None] <= p[None, :]) & (p[None, :] <= hi[:, None])
    return np.asarray((stats.binom.pmf(k[:, None], n, p[None, :]) * covers).sum(axis=0))


def test_default_interval_keeps_coverage_within_one_point_of_nominal() -> None:
    """For every n >= 8 and p in [0.05, 0.95]: Wilson falls to 0.92 at n = 16, p = 0.5, right at
    min_support, where "reliable" is decided."""
    method = PipelineOptions().interval
    grid = np.linspace(0.05, 0.95, 181)
    worst = min(exact_coverage(method, n, grid).min() for n in range(8, 121))
    assert worst >= 0.94
    assert exact_coverage("wilson", 16, np.array([0.5]))[0] < 0.94  # the defect it replaces


def test_selectivity_is_the_one_sided_fisher_exact_test() -> None:
    for k, n, big_k, big_n in [(3, 5, 60, 100), (5, 5, 5, 100), (1, 10, 40, 50)]:
        expected = stats.fisher_exact([[k, n - k], [big_k - k, big_n - n - (big_k - k)]], "greater").pvalue
        got = hypergeom_upper_tail(np.array([[k]]), np.array([n]), np.array([big_k]), big_n)[0, 0]
        assert got == pytest.approx(expected, rel=1e-9)


def test_selectivity_is_scipys_hypergeometric_tail_on_every_kind_of_cell() -> None:
    """The summed tails against scipy's `hypergeom.sf` (which costs time in proportion to the
    collection for every cell): clusters of 1 image up to the whole collection, k = 0 and
    k = n, neurons active nowhere and everywhere, tails down to 1e-200."""
    rng = np.random.default_rng(1)
    for big_n in (1, 7, 60, 1000):
        sizes = np.unique(np.concatenate([[1, big_n], rng.integers(1, big_n + 1, 12)]))
        totals = np.unique(np.concatenate([[0, big_n], rng.integers(0, big_n + 1, 30)]))
        counts = np.array(
            [[rng.integers(max(0, n + t - big_n), min(n, t) + 1) for t in totals] for n in sizes]
        )
        counts[:, 0] = 0
        got = hypergeom_upper_tail(counts, sizes, totals, big_n)
        expected = stats.hypergeom.sf(counts - 1, big_n, totals[None, :], sizes[:, None]).clip(0, 1)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
    tiny = hypergeom_upper_tail(np.array([[400]]), np.array([400]), np.array([400]), 1000)[0, 0]
    assert tiny == pytest.approx(stats.hypergeom.sf(399, 1000, 400, 400), rel=1e-9) and 0 < tiny < 1e-200


def test_a_neuron_active_in_most_images_is_generic_and_not_selective() -> None:
    """3 of 5 images pass the chance-rate test (p = 0.0086) for a neuron active in 60% of all
    images; it is not more active in the cluster than elsewhere, so it is not significant."""
    sizes = np.array([5, 45, 50])
    counts = np.array([[3, 5], [27, 0], [30, 0]])  # neuron 0: 60% everywhere; neuron 1: cluster 0 only
    members = counts >= 0.5 * sizes[:, None]
    st = membership_stats(counts, sizes, members, np.full(2, 0.1), 0.05, 0.5)
    assert st.chance_p_value[0, 0] == pytest.approx(0.00856, abs=1e-5) and st.above_chance[0, 0]
    assert not st.significant[0, 0] and st.generic[0]
    assert st.significant[0, 1] and not st.generic[1]


def test_reliable_needs_the_lower_bound_to_clear_min_support() -> None:
    counts = np.array([[6, 9, 3], [100, 2, 0], [0, 0, 0]])
    sizes = np.array([10, 100, 200])
    members = counts >= 0.5 * sizes[:, None]
    st = membership_stats(counts, sizes, members, np.full(3, 0.1), 0.05, 0.5)
    # 6/10 is in the group but its interval reaches far below 0.5; 100/100 is safely above
    assert members[0, 0] and not st.reliable[0, 0]
    assert st.reliable[1, 0] and not st.reliable[1, 1]
    assert st.significant[1, 0] and not st.significant[1, 2]
    assert np.isnan(st.lower[0, 2]) and not np.isnan(st.lower[0, 1])
