"""The run summary's pruning line is the pruning report's verdict."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import cast

from neuron_atlas.terminal import print_uncertainty_report
from shared.contracts.hierarchy import Hierarchy


def test_the_summary_prints_the_pruning_verdict() -> None:
    sentence = "pruning by significance at q <= 0.05 (88 of 112 neurons) loses accuracy: ..."
    summary = SimpleNamespace(
        memberships=10,
        reliable_share=0.5,
        significant_share=0.5,
        above_chance_share=0.5,
        generic_neurons=0,
        generic_memberships=0,
        mean_stability=None,
        clusters_checked=0,
        clusters_with_causal_effect=0,
    )
    uncertainty = SimpleNamespace(
        summary=summary,
        method=SimpleNamespace(causal=None, pass_precision=None),
        pruning=SimpleNamespace(verdict=SimpleNamespace(sentence=sentence)),
    )
    stream = io.StringIO()
    print_uncertainty_report(cast(Hierarchy, SimpleNamespace(uncertainty=uncertainty)), stream)
    assert stream.getvalue().splitlines()[-1] == sentence
