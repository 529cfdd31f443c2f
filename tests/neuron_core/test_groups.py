import numpy as np
import pytest

from neuron_atlas_client.errors import InputError
from neuron_core.groups import active_matrix, build_groups, cluster_counts, difference_neurons

# 8 images x 6 neurons. Level 1: clusters {0,1,2}, {3,4}, {5,6,7}; level 2: {0..4}, {5,6,7}.
ACTIVE = np.array(
    [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 1],
    ],
    dtype=bool,
)
PARTITIONS = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [2, 1], [2, 1], [2, 1]])


def test_level1_group_holds_neurons_active_in_at_least_min_support_of_images():
    levels = build_groups(PARTITIONS, ACTIVE, min_support=0.5)
    # cluster 0: neuron0 3/3, neuron1 2/3, neuron2 2/3, neuron3 1/3
    assert levels[0].members[0].tolist() == [True, True, True, False, False, False]
    # cluster 1: neuron0 1/2 (exactly half counts), neuron1 2/2, neuron4 2/2
    assert levels[0].members[1].tolist() == [True, True, False, False, True, False]
    assert levels[0].members[2].tolist() == [False, False, False, True, False, True]
    assert levels[0].counts[0].tolist() == [3, 2, 2, 1, 0, 0]
    assert levels[0].sizes.tolist() == [3, 2, 3]


def test_parent_group_is_the_intersection_of_its_children_groups():
    levels = build_groups(PARTITIONS, ACTIVE, min_support=0.5, rule="intersect")
    assert levels[1].members[0].tolist() == [True, True, False, False, False, False]
    assert levels[1].members[1].tolist() == levels[0].members[2].tolist()  # only child
    assert levels[0].parent.tolist() == [0, 0, 1]
    assert levels[1].parent is None


def test_direct_rule_recounts_over_all_the_parent_images():
    levels = build_groups(PARTITIONS, ACTIVE, min_support=0.5, rule="direct")
    # parent 0 = images 0..4: neuron0 4/5, neuron1 4/5, neuron2 2/5, neuron4 2/5
    assert levels[1].members[0].tolist() == [True, True, False, False, False, False]
    levels_high = build_groups(PARTITIONS, ACTIVE, min_support=0.4, rule="direct")
    assert levels_high[1].members[0].tolist() == [True, True, True, False, True, False]


def test_difference_neurons_are_child_minus_parent():
    levels = build_groups(PARTITIONS, ACTIVE, min_support=0.5)
    diff = difference_neurons(levels, 0)
    assert diff[0].tolist() == [False, False, True, False, False, False]
    assert diff[1].tolist() == [False, False, False, False, True, False]
    assert not diff[2].any()  # same group as its only-child parent
    assert not difference_neurons(levels, 1).any()  # top level: no parent


def test_counts_by_sparse_product_match_a_plain_loop():
    rng = np.random.default_rng(3)
    active = rng.random((500, 40)) < 0.1
    labels = rng.integers(0, 17, 500)
    sizes, counts = cluster_counts(labels, active_matrix(active))
    for k in range(17):
        assert sizes[k] == (labels == k).sum()
        assert counts[k].tolist() == active[labels == k].sum(axis=0).tolist()


def test_levels_that_do_not_nest_are_refused():
    partitions = np.array([[0, 0], [0, 1], [1, 1]])
    with pytest.raises(InputError, match="does not nest"):
        build_groups(partitions, np.ones((3, 2), dtype=bool), 0.5)
