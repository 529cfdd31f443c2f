"""The embedded run with its uncertainty stage: hierarchy.json carries the evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuron_atlas.cli import build_parser, options_from_args
from neuron_atlas.pipeline import run
from shared import artifacts
from shared.hierarchy import SCHEMA_VERSION, assemble_hierarchy, validate_hierarchy
from shared.options import PipelineOptions
from shared.storage import LocalStore


def test_uncertainty_flags_reach_the_options() -> None:
    args = build_parser().parse_args(
        ["run", "d", "--out", "o", "--alpha", "0.1", "--interval", "clopper_pearson", "--mc-samples", "0"]
    )
    options = options_from_args(args)
    assert (options.alpha, options.interval, options.mc_samples) == (0.1, "clopper_pearson", 0)
    assert options.bootstrap_resamples == 200


@pytest.mark.slow
def test_embedded_run_puts_uncertainty_into_the_hierarchy(sample_dir: Path, tmp_path: Path) -> None:
    options = PipelineOptions(
        allow_random_weights=True,
        bootstrap_resamples=20,
        mc_samples=2,
        ablation_random_sets=2,
        ablation_max_images=2,
        pruning_random_sets=1,
    )
    hierarchy = run(sample_dir, tmp_path / "out", options)
    validate_hierarchy(hierarchy)
    assert hierarchy["schema_version"] == SCHEMA_VERSION == "1.2"
    assert hierarchy["uncertainty"]["method"]["model_uncertainty"] == {"method": "tta", "samples": 2}
    assert hierarchy["uncertainty"]["pruning"]["images"] == len(hierarchy["images"])
    summary = hierarchy["uncertainty"]["summary"]
    assert summary["memberships"] == sum(len(c["neurons"]) for c in hierarchy["clusters"])
    for cluster in hierarchy["clusters"]:
        for neuron in cluster["neurons"]:
            evidence = neuron["evidence"]
            low, high = evidence["interval"]
            assert low <= neuron["support"] <= high
            assert evidence["count"] == round(neuron["support"] * cluster["size"])
        causal = cluster["uncertainty"]["causal"]
        assert (causal is None) == (not cluster["neurons"])
        assert (cluster["uncertainty"]["difference_test"] is None) == (
            cluster["parent"] is None or not cluster["difference_neurons"]
        )
    # a job assembled without the uncertainty stage (a suite still wiring it) stays valid
    store = LocalStore(tmp_path / "out")
    store.delete_prefix(artifacts.UNCERTAINTY)
    plain = assemble_hierarchy(store, "0")
    assert "uncertainty" not in plain and "evidence" not in plain["clusters"][0]["neurons"][0]
