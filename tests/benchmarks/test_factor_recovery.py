"""benchmarks/factor_recovery.py on the planted model, whose answers are known: each planted
concept's cluster is found, and zeroing its group hurts its own images, not the others."""

from __future__ import annotations

from benchmarks import null_calibration
from benchmarks.factor_recovery import factor_recovery, summary


def test_planted_concepts_are_recovered_and_their_groups_hurt_their_own_images() -> None:
    target = null_calibration.planted()
    collection = null_calibration.planted_collection(12, seed=0)
    assert collection.labels is not None
    partitions = null_calibration.partitions_of(collection.captions, shuffle_seed=None)
    options = null_calibration.options_for(target, False)
    arrays = null_calibration.job_arrays(target, collection, partitions, options)
    results = factor_recovery(
        target.module,
        target.prep,
        target.layers,
        collection.images,
        {"quadrant": [str(c) for c in collection.labels]},
        collection.labels,
        partitions,
        arrays.mask,
        arrays.levels,
        options.min_support,
    )
    assert len(results) == 4
    for found in results:
        # the captions name the quadrant in three forms: FINCH may split a quadrant by form
        assert found.cluster_jaccard >= 0.3 and found.group_jaccard >= 0.5, found
        assert found.own_drop is not None and found.other_drop is not None
        assert found.own_drop >= found.other_drop + 0.1, found
        assert found.true_own_drop is not None and found.true_other_drop is not None
        assert found.true_own_drop >= found.true_other_drop + 0.1, found
    assert summary(results)[2].startswith("| quadrant | 4 |")
