"""The comparison's paired tests: exactly the sign-flip permutation distribution (checked against
enumerating every flip), and calibrated under "same model behaviour" (two stochastic passes of
one checkpoint, simulated: benchmarks/comparison_calibration.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks import comparison_calibration as calibration
from services.uncertainty.paired_tests import (
    PairedActivity,
    selectivity_change_p,
    smallest_support_p,
    support_change_p,
)


def mid_p(observed: float, null: list[float]) -> float:
    """Two-sided mid-p of |observed| among |null| (every arrangement equally likely)."""
    values = np.abs(np.array(null))
    target = abs(observed)
    beyond = np.mean(values > target + 1e-12)
    equal = np.mean(np.abs(values - target) <= 1e-12)
    return float(beyond + 0.5 * equal)


def flips(diffs: list[int]) -> list[np.ndarray]:
    """Every sign flip of the discordant images' differences (+1: active only in B)."""
    return [np.array(diffs) * np.array(signs) for signs in itertools.product((1, -1), repeat=len(diffs))]


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 3), (1, 4), (2, 2), (5, 0), (3, 6), (0, 1)])
def test_support_p_is_the_sign_flip_distribution_of_the_support_change(a_only: int, b_only: int) -> None:
    diffs = [-1] * a_only + [1] * b_only
    expected = mid_p(sum(diffs), [float(f.sum()) for f in flips(diffs)])
    assert support_change_p(np.array([a_only]), np.array([b_only]))[0] == pytest.approx(expected)


def test_support_p_is_one_without_discordant_images_and_its_floor_is_half_to_the_size() -> None:
    assert support_change_p(np.array([0]), np.array([0]))[0] == 1.0
    assert support_change_p(np.array([0]), np.array([6]))[0] == pytest.approx(smallest_support_p(6))
    assert smallest_support_p(4) > 0.05 > smallest_support_p(5)


@pytest.mark.parametrize(
    ("concept", "rest", "n_concept", "n_rest"),
    [((0, 4), (1, 1), 6, 10), ((2, 1), (0, 3), 5, 7), ((3, 0), (2, 2), 3, 9), ((0, 0), (1, 3), 4, 8)],
)
def test_selectivity_p_is_the_sign_flip_distribution_of_the_selectivity_change(
    concept: tuple[int, int], rest: tuple[int, int], n_concept: int, n_rest: int
) -> None:
    """(a_only, b_only) in the concept and in the rest; T = mean change inside - mean change outside."""
    inside = [-1] * concept[0] + [1] * concept[1]
    outside = [-1] * rest[0] + [1] * rest[1]
    null = [
        float(f[: len(inside)].sum() / n_concept - f[len(inside) :].sum() / n_rest)
        for f in flips(inside + outside)
    ]
    observed = sum(inside) / n_concept - sum(outside) / n_rest
    got = selectivity_change_p(sum(inside), len(inside), n_concept, sum(outside), len(outside), n_rest)
    assert got == pytest.approx(mid_p(observed, null))


def test_paired_activity_tests_what_the_masks_say() -> None:
    a = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 1]], dtype=bool)
    b = np.array([[0, 0], [0, 0], [1, 1], [0, 1], [1, 1]], dtype=bool)
    activity = PairedActivity(a, b)
    tests = activity.test(np.array([0, 1, 2]), np.array([0, 1]))
    assert tests.a_only.tolist() == [2, 0] and tests.b_only.tolist() == [0, 0]
    assert tests.support_a.tolist() == pytest.approx([1.0, 1 / 3])
    assert tests.support_b.tolist() == pytest.approx([1 / 3, 1 / 3])
    assert tests.support_p[1] == 1.0  # nothing discordant
    assert tests.selectivity_a is not None and tests.selectivity_b is not None
    # neuron 0: in the concept 1.0 vs 0.0 elsewhere in A; 1/3 vs 1/2 in B
    assert tests.selectivity_a[0] == pytest.approx(1.0)
    assert tests.selectivity_b[0] == pytest.approx(1 / 3 - 1 / 2)
    # the family: mean support over both models >= min_support / 2 (neuron 0: 2/3, neuron 1: 1/3)
    assert activity.family(np.array([0, 1, 2]), 0.5).tolist() == [0, 1]
    assert activity.family(np.array([0, 1, 2]), 0.9).tolist() == [0]


def test_swapping_the_two_models_keeps_every_p_value() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((40, 12)) < 0.3, rng.random((40, 12)) < 0.3
    rows, neurons = np.arange(15), np.arange(12)
    forward, backward = PairedActivity(a, b).test(rows, neurons), PairedActivity(b, a).test(rows, neurons)
    assert np.allclose(forward.support_p, backward.support_p)
    assert forward.selectivity_p is not None and backward.selectivity_p is not None
    assert np.allclose(forward.selectivity_p, backward.selectivity_p)


@pytest.mark.parametrize("name", list(calibration.NULLS))
def test_false_positive_rate_under_same_model_behaviour_is_alpha(name: str) -> None:
    """Two stochastic passes of one checkpoint: the selectivity test, and the support test on
    pairs whose discordant images can reach alpha, reject about alpha of the time (within 2 SE);
    the support test over every pair never rejects more than that (few discordant images make
    it conservative, never liberal)."""
    table = calibration.run(calibration.NULLS[name], repeats=40, seed=7)
    alpha = calibration.ALPHA
    for test in ("support_testable", "selectivity"):
        cell = table[test]
        assert cell["tests"] >= 200, cell
        assert abs(cell["rate"] - alpha) <= 2 * cell["se"], (test, cell)
    assert table["support"]["rate"] <= alpha + 2 * table["support"]["se"]


def test_a_detector_that_loses_its_signal_is_found() -> None:
    table = calibration.run(calibration.Setting(drop=1.0), repeats=20, seed=3)
    assert table["power"]["rate"] >= 0.9
