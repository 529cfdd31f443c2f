"""The run summary's pruning line is the pruning report's verdict."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import cast

from neuron_atlas.terminal import print_uncertainty_report
from neuron_atlas_client.contracts.hierarchy import Hierarchy
from neuron_atlas_client.contracts.uncertainty import TestCounts, UncertaintySummary


def test_the_summary_prints_the_pruning_verdict() -> None:
    sentence = "pruning by significance at q <= 0.05 (88 of 112 neurons) loses accuracy: ..."
    counts = TestCounts(tested=0, significant=0, not_tested_budget=0, not_tested_too_few_images=0)
    summary = UncertaintySummary(
        memberships=10,
        reliable_share=0.5,
        too_few_images_share=0.0,
        selective_share=0.5,
        above_chance_share=0.5,
        frequent_neurons=0,
        generic_memberships=5,
        mean_group_stability=None,
        specificity=counts,
        keep_only=counts,
        importance=counts,
        difference=counts,
    )
    uncertainty = SimpleNamespace(
        summary=summary,
        method=SimpleNamespace(pass_precision=None, model_uncertainty=None),
        pruning=SimpleNamespace(verdict=SimpleNamespace(sentence=sentence)),
    )
    stream = io.StringIO()
    print_uncertainty_report(cast(Hierarchy, SimpleNamespace(uncertainty=uncertainty)), stream)
    assert stream.getvalue().splitlines()[-1] == sentence
