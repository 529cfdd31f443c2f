"""The difference test re-runs the product's selection rule inside every permutation, so under
exchangeable images it is significant at about alpha; the hypergeometric test it replaces
(`ablation.difference_separation`) chose the difference neurons on the images it then tested
them on, and was significant far more often (issue 23)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from neuron_core.groups import build_groups, difference_neurons
from services.uncertainty.difference import DifferenceResult, ParentSubtree, Statistic, difference_tests
from services.uncertainty.selectivity import hypergeom_upper_tail

ALPHA = 0.05
MIN_SUPPORT = 0.5
N_NEURONS = 128
PLANTED = np.arange(13)  # the neurons a planted difference adds: 10% of them


# The test this module's replaced, as the stage ran it before (services/uncertainty/ablation.py
# until issue 23): kept here only to show, beside the new test, what it got wrong.
def difference_separation(
    child_mask: np.ndarray,
    sibling_mask: np.ndarray,
    difference: np.ndarray,
    min_support: float,
    alpha: float,
) -> dict[str, Any] | None:
    """Hypergeometric test that the child's images carry its difference neurons more often than
    its siblings' images. An image *carries* them when at least `min_support` of the difference
    neurons are active in it (the group rule, turned per image). Masks are (images, neurons) of
    the child's and of its siblings' images; None when there is nothing to test."""
    if not difference.any():
        return None
    need = min_support * difference.sum()
    child = int(np.count_nonzero(child_mask[:, difference].sum(axis=1) >= need))
    siblings = int(np.count_nonzero(sibling_mask[:, difference].sum(axis=1) >= need))
    n_child, n_parent = child_mask.shape[0], child_mask.shape[0] + sibling_mask.shape[0]
    # P(X >= child) for X ~ Hypergeom(parent images, carriers among them, child images)
    carriers = np.array([child + siblings])
    p_value = float(hypergeom_upper_tail(np.array([[child]]), np.array([n_child]), carriers, n_parent)[0, 0])
    return {
        "child_carrier_share": round(child / n_child, 6),
        "sibling_carrier_share": round(siblings / sibling_mask.shape[0], 6)
        if sibling_mask.shape[0]
        else None,
        "p_value": float(f"{p_value:.4g}"),
        "significant": bool(p_value <= alpha),
    }


def exchangeable_mask(n_images: int, rng: np.random.Generator, n_neurons: int = N_NEURONS) -> np.ndarray:
    """Independent, identically distributed images: each neuron active with its own base rate
    (0.05 to 0.6), tilted by a latent per image that all neurons share with their own loading,
    so neurons are correlated."""
    rates = rng.uniform(0.05, 0.6, n_neurons)
    loading = rng.normal(0.0, 0.5, n_neurons)
    latent = rng.normal(size=(n_images, 1))
    logit = np.log(rates / (1 - rates)) + latent * loading
    return rng.random((n_images, n_neurons)) < 1 / (1 + np.exp(-logit))


def flat(sizes: tuple[int, ...], parents: int) -> np.ndarray:
    """Two levels: `parents` parents, each with children of these sizes."""
    child = np.repeat(np.arange(parents * len(sizes)), np.tile(sizes, parents))
    parent = np.repeat(np.arange(parents), sum(sizes))
    return np.stack([child, parent], axis=1)


def three_levels(parents: int, rng: np.random.Generator) -> np.ndarray:
    """Three levels: each top cluster holds 2 or 3 middle clusters, each middle cluster 2 or 3
    level-1 clusters of 2 to 4 images."""
    rows, leaf, middle = [], 0, 0
    for top in range(parents):
        for _ in range(rng.integers(2, 4)):
            for _ in range(rng.integers(2, 4)):
                rows += [(leaf, middle, top)] * int(rng.integers(2, 5))
                leaf += 1
            middle += 1
    return np.array(rows)


def caption_wording(parents: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Parents whose images all show one concept (its neurons active in 90% of them) and whose
    two children of 6 differ only in how their captions are worded: their images are drawn
    from the same distribution."""
    partitions = flat((6, 6), parents)
    mask = exchangeable_mask(partitions.shape[0], rng)
    for parent in range(parents):
        rows = np.flatnonzero(partitions[:, 1] == parent)
        concept = rng.choice(N_NEURONS, 5, replace=False)
        mask[np.ix_(rows, concept)] = rng.random((rows.shape[0], 5)) < 0.9
    return partitions, mask


def planted(partitions: np.ndarray, level: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Exchangeable images, except that the first child of every parent (at `level`) carries the
    `PLANTED` neurons, each active in 90% of its images and 5% of the others."""
    mask = exchangeable_mask(partitions.shape[0], rng)
    parents = partitions[:, level + 1]
    firsts = [int(partitions[parents == p, level].min()) for p in np.unique(parents)]
    carriers = np.isin(partitions[:, level], firsts)
    rate = np.where(carriers, 0.9, 0.05)[:, None]
    mask[:, PLANTED] = rng.random((partitions.shape[0], PLANTED.shape[0])) < rate
    return mask, firsts


def old_pvalues(partitions: np.ndarray, mask: np.ndarray, rule: str) -> list[float]:
    """The hypergeometric test this replaces, on every child with difference neurons."""
    levels = build_groups(partitions, mask, MIN_SUPPORT, rule)
    p_values = []
    for level in range(partitions.shape[1] - 1):
        diff = difference_neurons(levels, level)
        for k in np.flatnonzero(diff.any(axis=1)):
            child = partitions[:, level] == k
            parent = partitions[:, level + 1] == partitions[child, level + 1][0]
            result = difference_separation(mask[child], mask[parent & ~child], diff[k], MIN_SUPPORT, ALPHA)
            assert result is not None
            p_values.append(result["p_value"])
    return p_values


def rate_bound(tests: int) -> float:
    """alpha + 2 standard errors of a rate over `tests` tests at alpha."""
    return ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / tests)


Setting = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


def flat_setting(sizes: tuple[int, ...], parents: int) -> Setting:
    def build(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        partitions = flat(sizes, parents)
        return partitions, exchangeable_mask(partitions.shape[0], rng)

    return build


def hierarchy_setting(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    partitions = three_levels(30, rng)
    return partitions, exchangeable_mask(partitions.shape[0], rng)


NULL_SETTINGS: dict[str, tuple[Setting, str]] = {
    "2,2,3 intersect": (flat_setting((2, 2, 3), 45), "intersect"),
    "2,2,3 direct": (flat_setting((2, 2, 3), 45), "direct"),
    "4,4 intersect": (flat_setting((4, 4), 64), "intersect"),
    "4,4 direct": (flat_setting((4, 4), 64), "direct"),
    "20,20 intersect": (flat_setting((20, 20), 64), "intersect"),
    "20,20 direct": (flat_setting((20, 20), 64), "direct"),
    "3 levels intersect": (hierarchy_setting, "intersect"),
    "caption wording intersect": (lambda rng: caption_wording(64, rng), "intersect"),
    "caption wording direct": (lambda rng: caption_wording(64, rng), "direct"),
}


@functools.cache
def null_setting(name: str) -> tuple[np.ndarray, np.ndarray, float, int]:
    """A setting's partitions and active sets, and the old test's false-positive rate and its
    number of tests on them."""
    build, rule = NULL_SETTINGS[name]
    partitions, mask = build(np.random.default_rng(sorted(NULL_SETTINGS).index(name)))
    p_old = np.array(old_pvalues(partitions, mask, rule))
    return partitions, mask, float(np.mean(p_old <= ALPHA)), p_old.shape[0]


def null_rates(name: str, statistic: Statistic) -> tuple[float, int, float, int]:
    """New false-positive rate and its number of tests, then the old test's, in one setting."""
    partitions, mask, old_rate, old_tests = null_setting(name)
    results = difference_tests(
        partitions,
        mask,
        MIN_SUPPORT,
        NULL_SETTINGS[name][1],
        permutations=199,
        alpha=ALPHA,
        seed=1,
        statistic=statistic,
    )
    p_new = np.array([r.p_value for r in results.values() if r.status == "tested"])
    return float(np.mean(p_new <= ALPHA)), p_new.shape[0], old_rate, old_tests


@pytest.mark.parametrize("statistic", ["support", "carriers"])
@pytest.mark.parametrize("name", list(NULL_SETTINGS))
def test_exchangeable_children_are_significant_at_about_alpha_unlike_the_old_test(
    name: str, statistic: Statistic
) -> None:
    """Images exchangeable within each parent (including children that differ only in caption
    wording): the new test's false-positive rate is at most alpha + 2 SE over >= 120 tests
    (SE <= 0.02); the old test's is far above it, except under `direct` with two children of 4,
    where it happens to sit near alpha in this simulation."""
    new_rate, new_tests, old_rate, old_tests = null_rates(name, statistic)
    assert new_tests >= 120
    assert new_rate <= rate_bound(new_tests), (name, new_rate, new_tests)
    assert old_tests >= 120
    if name != "4,4 direct":
        assert old_rate > 3 * rate_bound(old_tests), (name, old_rate, old_tests)


def test_a_rare_difference_set_is_not_significant_for_being_rare() -> None:
    """Children of 20 images with sparse activity (every rate below 0.25): a difference set
    (a neuron in >= 10 of 20 images) is rare in any arrangement. Counting the arrangements
    without one as a statistic of 0 made p <= 0.05 in 17% of the tested children; comparing
    only arrangements that have one keeps it at alpha."""
    rng = np.random.default_rng(11)
    partitions = flat((20, 20), 300)
    rates = rng.uniform(0.01, 0.25, N_NEURONS)
    logit = np.log(rates / (1 - rates)) + rng.normal(size=(partitions.shape[0], 1)) * rng.normal(
        0, 0.5, N_NEURONS
    )
    mask = rng.random(logit.shape) < 1 / (1 + np.exp(-logit))
    results = difference_tests(partitions, mask, MIN_SUPPORT, permutations=199, alpha=ALPHA, seed=5)
    p_values = np.array([r.p_value for r in results.values() if r.status == "tested"])
    assert 120 <= p_values.shape[0] < 0.5 * len(results)  # most children have no difference set
    assert np.mean(p_values <= ALPHA) <= rate_bound(p_values.shape[0])


POWER_SETTINGS = {
    "4,4": (flat((4, 4), 20), 0),
    "4,4,4": (flat((4, 4, 4), 20), 0),
    "8,8": (flat((8, 8), 20), 0),
    "8,8,8": (flat((8, 8, 8), 20), 0),
    "20,20": (flat((20, 20), 20), 0),
    "3 levels, middle level": (three_levels(20, np.random.default_rng(5)), 1),
}
# Under `direct` a parent's group is its own images' majority, so a neuron active in 90% of a
# child that is half its parent (and 5% of the rest) often joins the parent's group and is no
# difference neuron at all: no test can find it. With three children it stays a difference.
POWER_CASES = [(name, "intersect") for name in POWER_SETTINGS] + [
    (name, "direct") for name in POWER_SETTINGS if name not in ("4,4", "8,8")
]


def planted_power(name: str, rule: str, statistic: Statistic) -> tuple[float, list[DifferenceResult]]:
    partitions, level = POWER_SETTINGS[name]
    mask, firsts = planted(partitions, level, np.random.default_rng(7))
    results = difference_tests(
        partitions, mask, MIN_SUPPORT, rule, permutations=199, alpha=ALPHA, seed=2, statistic=statistic
    )
    assert all(np.count_nonzero(partitions[:, level] == k) >= 4 for k in firsts)
    found = [results[(level, k)] for k in firsts]
    significant = [r.status == "tested" and r.p_value is not None and r.p_value <= ALPHA for r in found]
    return float(np.mean(significant)), found


@pytest.mark.parametrize(("name", "rule"), POWER_CASES)
def test_a_planted_difference_of_four_images_or_more_is_significant(name: str, rule: str) -> None:
    """A child whose images carry 10% more neurons (each active in 90% of its images and 5% of
    the others) than its siblings."""
    power, found = planted_power(name, rule, "support")
    assert power >= 0.9, (name, rule, [r.p_value for r in found])
    assert all(r.statistic is not None and r.statistic > 0.3 for r in found)


def test_carrier_shares_miss_small_planted_differences_that_supports_find() -> None:
    """Why `support` is the default statistic: every child of 4 carries the neurons chosen on
    it in almost any arrangement, so the carrier-share difference saturates."""
    assert planted_power("4,4,4", "intersect", "support")[0] >= 0.95
    assert planted_power("4,4,4", "intersect", "carriers")[0] <= 0.3


def generic_mask(partitions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exchangeable images with neurons above min_support in the whole collection, so that
    exclude_generic removes some neurons that would otherwise be difference neurons."""
    mask = exchangeable_mask(partitions.shape[0], rng, 64)
    mask[:, :8] = rng.random((partitions.shape[0], 8)) < 0.6
    return mask


@pytest.mark.parametrize("rule", ["intersect", "direct"])
@pytest.mark.parametrize("exclude_generic", [False, True])
def test_the_identity_permutation_reproduces_the_products_difference_neurons(
    rule: str, exclude_generic: bool
) -> None:
    rng = np.random.default_rng(3)
    partitions = three_levels(12, rng)
    mask = generic_mask(partitions, rng)
    levels = build_groups(partitions, mask, MIN_SUPPORT, rule, exclude_generic)
    candidates = (
        ~(mask.mean(axis=0) >= MIN_SUPPORT) if exclude_generic else np.ones(mask.shape[1], dtype=bool)
    )
    compared = 0
    for level in range(partitions.shape[1] - 1):
        product = difference_neurons(levels, level)
        for parent in range(int(partitions[:, level + 1].max()) + 1):
            subtree = ParentSubtree(partitions, mask, level, parent, MIN_SUPPORT, rule, candidates)
            for child, cluster in enumerate(subtree.children.tolist()):
                selection = subtree.child(child)
                found = np.zeros(mask.shape[1], dtype=bool)
                found[selection.neurons] = selection.differences(np.arange(subtree.size)[None, :])[0][0]
                assert np.array_equal(found, product[cluster]), (level, cluster)
                compared += int(product[cluster].sum())
    assert compared > 100  # difference neurons were there to compare
    # the generic neurons are difference neurons unless excluded
    generic_in_differences = bool(difference_neurons(levels, 0)[:, :8].any())
    assert generic_in_differences != exclude_generic


def test_the_observed_shares_are_the_products_carriers() -> None:
    """Shares on the real arrangement: the per-image group rule on the product's difference
    neurons, as the old test counted them."""
    rng = np.random.default_rng(4)
    partitions = flat((5, 7), 10)
    mask = exchangeable_mask(partitions.shape[0], rng)
    levels = build_groups(partitions, mask, MIN_SUPPORT)
    diff = difference_neurons(levels, 0)
    results = difference_tests(partitions, mask, MIN_SUPPORT, permutations=99, alpha=0.1)
    for (level, k), result in results.items():
        child = partitions[:, 0] == k
        siblings = (partitions[:, 1] == partitions[child, 1][0]) & ~child
        old = difference_separation(mask[child], mask[siblings], diff[k], MIN_SUPPORT, 0.1)
        assert level == 0 and old is not None and result.status == "tested"
        assert result.child_carrier_share == pytest.approx(old["child_carrier_share"], abs=1e-6)
        assert result.sibling_carrier_share == pytest.approx(old["sibling_carrier_share"], abs=1e-6)
        support = mask[child][:, diff[k]].mean(), mask[siblings][:, diff[k]].mean()
        assert (result.child_support, result.sibling_support) == pytest.approx(support)
        assert result.statistic == pytest.approx(support[0] - support[1])


def test_stopping_early_gives_the_decisions_of_every_permutation() -> None:
    """Besag-Clifford stopping: the same decisions, and the same p-values at or below alpha, as
    running all permutations; children that cannot reach alpha stop early."""
    partitions = flat((4, 4, 4), 30)
    mask, firsts = planted(partitions, 0, np.random.default_rng(6))
    runs = [
        difference_tests(partitions, mask, MIN_SUPPORT, permutations=199, alpha=ALPHA, seed=3, sequential=seq)
        for seq in (True, False)
    ]
    fast, full = runs
    assert fast.keys() == full.keys()
    significant, others = [], []
    for key, complete in full.items():
        early = fast[key]
        assert complete.status == early.status == "tested"
        assert complete.p_value is not None and early.p_value is not None
        assert (early.p_value <= ALPHA) == (complete.p_value <= ALPHA), key
        if complete.p_value <= ALPHA:
            assert early.p_value == complete.p_value and early.permutations == 199
            significant.append(key)
        else:
            others.append(early.permutations)
        assert complete.permutations == 199
    assert len(significant) >= len(firsts)  # the planted children, at least
    assert others and np.mean(others) < 199 * 0.5


def test_children_that_cannot_be_tested_say_why() -> None:
    rng = np.random.default_rng(8)
    # parent 0: one child (no siblings); parent 1: children of 2 and 2 (6 splits, p >= 1/6);
    # parent 2: two children of 5 with identical images (no difference); parent 3: 5 and 5
    partitions = np.array(
        [(0, 0)] * 4 + [(1, 1)] * 2 + [(2, 1)] * 2 + [(3, 2)] * 5 + [(4, 2)] * 5 + [(5, 3)] * 5 + [(6, 3)] * 5
    )
    mask = exchangeable_mask(partitions.shape[0], rng)
    mask[13:18] = mask[8:13]
    mask[18:23, PLANTED] = True
    results = difference_tests(partitions, mask, MIN_SUPPORT, permutations=199, alpha=ALPHA)
    assert results[(0, 0)].status == "no siblings" and results[(0, 0)].min_p_value == 1.0
    for k in (1, 2):
        assert results[(0, k)].status == "too few images"
        assert results[(0, k)].min_p_value == pytest.approx(1 / 6)
        assert results[(0, k)].p_value is None and results[(0, k)].permutations == 0
        assert results[(0, k)].statistic is not None  # the shares are still reported
    for k in (3, 4):
        assert results[(0, k)].status == "no difference" and results[(0, k)].statistic is None
    tested = results[(0, 5)]
    assert tested.status == "tested" and tested.min_p_value == pytest.approx(1 / 200)  # C(10, 5) = 252
    assert results[(0, 6)].status == "tested"


def test_a_childs_result_does_not_depend_on_other_parents() -> None:
    rng = np.random.default_rng(9)
    partitions = flat((4, 5), 6)
    mask = exchangeable_mask(partitions.shape[0], rng)
    before = difference_tests(partitions, mask, MIN_SUPPORT, permutations=99, alpha=0.1, seed=4)
    changed = mask.copy()
    changed[partitions[:, 1] != 0] = exchangeable_mask(int(np.count_nonzero(partitions[:, 1] != 0)), rng)
    after = difference_tests(partitions, changed, MIN_SUPPORT, permutations=99, alpha=0.1, seed=4)
    assert before[(0, 0)] == after[(0, 0)] and before[(0, 1)] == after[(0, 1)]
    assert any(before[key] != after[key] for key in before if key[1] >= 2)


def test_too_few_permutations_to_reach_alpha_are_refused() -> None:
    partitions = flat((4, 4), 2)
    mask = exchangeable_mask(partitions.shape[0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="cannot give p <= alpha"):
        difference_tests(partitions, mask, MIN_SUPPORT, permutations=10, alpha=ALPHA)


@pytest.mark.parametrize(
    ("partitions", "rule", "arrangements"),
    [
        (flat((2, 2, 3), 1), "intersect", 210),  # 7! / (2! 2! 3!)
        (flat((2, 2, 3), 1), "direct", 21),  # C(7, 2)
        (np.array([(0, 0, 0)] * 2 + [(1, 0, 0)] * 2 + [(2, 1, 0)] * 2 + [(3, 1, 0)]), "intersect", 315),
    ],
)
def test_every_arrangement_of_a_small_parent_gives_a_valid_p_no_smaller_than_its_bound(
    partitions: np.ndarray, rule: str, arrangements: int
) -> None:
    """All 5,040 orders of a 7-image parent: the exact conditional p of each arrangement that
    has a difference set is <= alpha for at most alpha of them, and never below 1 /
    (arrangements the statistic can tell apart). The third parent's first child holds two
    level-1 clusters of 2 (interchangeable), its sibling one of 2 and one of 1:
    C(7, 4) * 3 * 3 = 315."""
    mask = exchangeable_mask(7, np.random.default_rng(12))
    level = partitions.shape[1] - 2
    subtree = ParentSubtree(partitions, mask, level, 0, MIN_SUPPORT, rule, np.ones(N_NEURONS, dtype=bool))
    assert subtree.arrangements(0) == arrangements
    selection = subtree.child(0)
    perms = np.array(list(itertools.permutations(range(7))))
    differences, counts = selection.differences(perms)
    summaries = selection.summaries(perms, differences, counts, carriers=False)
    n_child = selection.slots.shape[0]
    numerator, denominator = summaries.scores("support", n_child, 7 - n_child)
    value = (numerator / denominator)[summaries.sizes > 0]
    exact_p = (value[None, :] >= value[:, None] - 1e-12).mean(axis=1)
    assert value.shape[0] > 0.9 * perms.shape[0]
    assert exact_p.min() >= 1 / arrangements - 1e-12
    for alpha in (0.05, 0.1, 0.2):
        assert np.mean(exact_p <= alpha) <= alpha
