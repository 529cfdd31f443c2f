"""The null-calibration benchmark in small: every test's false-positive rate under the product's
own nulls is not clearly off, the old causal check (importance) is, and planted concepts are
found. The full table is benchmarks/null_calibration.py's (docs: uncertainty)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import null_calibration


@pytest.mark.slow
def test_no_test_passes_random_image_sets_clearly_more_often_than_alpha(tmp_path) -> None:
    table = null_calibration.main(
        [
            "--repeats",
            "1",
            "--per-concept",
            "12",
            "--min-units",
            "15",
            "--max-extra-jobs",
            "15",
            "--skip-trained",
            "--json",
            str(tmp_path / "t.json"),
        ]
    )
    cells = table["cells"]
    # the planted model's random sets give few tested children (most have no difference
    # neurons): selection-only jobs top the cell up, without the other tests' model passes
    planted_null = null_calibration.NULLS[1]
    top_up = table["top_ups"][planted_null]
    assert top_up["selection only"] >= 1 and top_up["with model passes"] == 0, top_up
    assert cells["difference"][planted_null]["units"] >= 15 or "difference" in top_up["short"], top_up
    alpha = null_calibration.ALPHA
    for test in ("selectivity", "specificity", "keep_only", "difference"):
        for column in null_calibration.NULLS:
            cell = cells.get(test, {}).get(column)
            if cell is None or cell["units"] < 10:
                continue
            # clearly off: three standard errors above alpha (the full run holds it to two)
            assert cell["rate"] <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / cell["units"]), (
                test,
                column,
                cell,
            )
    assert cells["specificity"][null_calibration.NULLS[0]]["units"] >= 20
    # the reproduction: random image sets pass the old check most of the time
    assert cells["importance"][null_calibration.NULLS[0]]["rate"] >= 0.5
    power = null_calibration.POWERS[0]
    assert cells["specificity"][power]["rate"] >= 0.75 and cells["selectivity"][power]["rate"] >= 0.75


def test_random_set_clusters_do_not_follow_the_images_order() -> None:
    """The random-set null's clusters share no concept with their images. Shuffling the captions
    before FINCH did not give that: FINCH splits a repeated caption by the images' positions and
    the planted collection lists its images concept by concept, so small clusters of one concept
    came out (8 of 9 images; the difference test then found them, issue 23)."""
    for seed in range(3):
        collection = null_calibration.planted_collection(60, seed)
        assert collection.labels is not None
        partitions = null_calibration.partitions_of(collection.captions, shuffle_seed=1000 + seed)
        for cluster in np.unique(partitions[:, 0]):
            concepts = np.bincount(collection.labels[partitions[:, 0] == cluster], minlength=4)
            # a random set of 6 or more of 4 equal concepts: at most ~50% of one, rarely 70%
            assert concepts.sum() < 6 or concepts.max() / concepts.sum() < 0.7, (seed, cluster, concepts)


def test_the_default_budget_null_runs_what_a_default_run_plans() -> None:
    """`--default-budget` (issue 24: the table must hold at the default budget) runs each job
    with the product's own defaults for everything the plan spends the budget on, so its tested
    concepts are the ones a default run tests; only importance (`full` only) is off."""
    from neuron_atlas_client.options import PipelineOptions

    target = null_calibration.planted()
    default, every = PipelineOptions(), null_calibration.options_for(target, False)
    at_default = null_calibration.options_for(target, False, default_budget=True)
    planned = (
        "uncertainty_budget",
        "mc_samples",
        "tta_samples",
        "pruning_random_sets",
        "ablation_max_images",
    )
    assert all(getattr(at_default, name) == getattr(default, name) for name in planned)
    assert every.uncertainty_budget != default.uncertainty_budget  # the table's own: every concept
    assert at_default.ablation_random_sets == 0 and at_default.top_fraction == target.top_fraction
