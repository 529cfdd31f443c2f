"""Bootstrap stability on synthetic activations with planted groups."""

from __future__ import annotations

import numpy as np

from neuron_core.groups import build_groups
from services.uncertainty.bootstrap import bootstrap_groups, jaccard_rows


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """4 level-1 clusters of 60 images, 2 parents; each cluster has 5 planted neurons active in
    90% of its images, the shared neurons 0-2 in every cluster, background at 5%."""
    rng = np.random.default_rng(seed)
    n_neurons, size = 100, 60
    labels = np.repeat(np.arange(4), size)
    partitions = np.stack([labels, labels // 2], axis=1)
    mask = rng.random((labels.shape[0], n_neurons)) < 0.05
    planted_groups = {}
    for c in range(4):
        group = np.array([0, 1, 2, *range(10 + 5 * c, 15 + 5 * c)])
        planted_groups[c] = group
        rows = labels == c
        mask[np.ix_(rows, group)] = rng.random((size, group.shape[0])) < 0.9
    # a borderline neuron in cluster 0: active in exactly half its images
    mask[labels == 0, 50] = np.arange(size) % 2 == 0
    return partitions, mask, planted_groups


def test_bootstrap_recovers_planted_groups_with_high_inclusion() -> None:
    partitions, mask, groups = planted()
    levels = build_groups(partitions, mask, 0.5)
    result = bootstrap_groups(partitions, mask, levels, 0.5, "intersect", 200, seed=3)
    for c, group in groups.items():
        assert np.all(result.inclusion[0][c, group] > 0.99)
        others = np.setdiff1d(np.arange(mask.shape[1]), [*group, 50])
        assert np.all(result.inclusion[0][c, others] < 0.01)
    # the neuron at exactly 50% support is a coin flip in the resamples
    assert 0.3 < result.inclusion[0][0, 50] < 0.7
    # parents keep the shared neurons 0-2 (intersection of their children)
    assert np.all(result.inclusion[1][:, :3] > 0.99)
    assert np.all(result.stability[1] > 0.95)
    assert 0.8 < result.stability[0][0] < result.stability[0][1]


def test_bootstrap_is_seeded() -> None:
    partitions, mask, _ = planted()
    levels = build_groups(partitions, mask, 0.5)
    a = bootstrap_groups(partitions, mask, levels, 0.5, "direct", 20, seed=1)
    b = bootstrap_groups(partitions, mask, levels, 0.5, "direct", 20, seed=1)
    c = bootstrap_groups(partitions, mask, levels, 0.5, "direct", 20, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.inclusion, b.inclusion, strict=True))
    assert not np.array_equal(a.inclusion[0], c.inclusion[0])


def test_noise_groups_are_unstable() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 12)
    partitions = np.stack([labels, np.zeros_like(labels)], axis=1)
    mask = rng.random((36, 40)) < 0.5  # no planted structure: groups are accidents
    levels = build_groups(partitions, mask, 0.5)
    result = bootstrap_groups(partitions, mask, levels, 0.5, "intersect", 100, seed=0)
    assert np.all(result.stability[0] < 0.8)


def test_jaccard_of_empty_sets_is_one() -> None:
    a = np.array([[True, False], [False, False]])
    b = np.array([[True, True], [False, False]])
    np.testing.assert_allclose(jaccard_rows(a, b), [0.5, 1.0])
