"""The embedded run with its uncertainty stage: hierarchy.json carries the evidence."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import jsonschema
import pytest

from neuron_atlas.cli import build_parser, options_from_args
from neuron_atlas.pipeline import run
from neuron_atlas_client.contracts.hierarchy import Cluster
from neuron_atlas_client.options import PipelineOptions
from shared.pipeline.hierarchy import (
    SCHEMA_VERSION,
    assemble_hierarchy,
    hierarchy_bytes,
    read_hierarchy,
    validate_hierarchy,
    write_hierarchy,
)
from shared.storage import artifacts
from shared.storage.stores import LocalStore


def test_uncertainty_flags_reach_the_options() -> None:
    args = build_parser().parse_args(
        ["run", "d", "--out", "o", "--alpha", "0.1", "--interval", "clopper_pearson", "--mc-samples", "0"]
    )
    options = options_from_args(args)
    assert (options.alpha, options.interval, options.mc_samples) == (0.1, "clopper_pearson", 0)
    assert options.bootstrap_resamples == 200


@pytest.mark.slow
def test_embedded_run_puts_uncertainty_into_the_hierarchy(sample_dir: Path, tmp_path: Path) -> None:
    # A budget that buys the dropout sample on any CPU: the plan prices passes in float32 where the
    # CPU has no bfloat16 instructions (about 1.4x the FPE of a bfloat16 pass), and at the default
    # budget a 24-image job's share for the passes then holds fewer than MIN_SAMPLE images.
    options = PipelineOptions(
        allow_random_weights=True, bootstrap_resamples=20, clustering_resamples=3, uncertainty_budget=3.0
    )
    hierarchy = run(sample_dir, tmp_path / "out", options).document()
    validate_hierarchy(hierarchy)
    assert hierarchy["schema_version"] == SCHEMA_VERSION == "2.0"
    job = hierarchy["uncertainty"]
    method, plan = job["method"], job["plan"]
    # ResNet18 has no dropout: dropout is injected before the read layers, and without labels it
    # is read as sensitivity to feature dropout, on the sample the budget affords
    sampled = method["model_uncertainty"]["images"]
    assert method["model_uncertainty"] == {
        "method": "injected_dropout",
        "interpretation": "sensitivity to feature dropout",
        "samples": 8,
        "images": sampled,
        "dropout_rate": 0.1,
        "calibration": None,
    }
    assert 16 <= sampled <= len(hierarchy["images"])
    assert sum("model_uncertainty" in image for image in hierarchy["images"]) == sampled
    steps = {step["name"]: step for step in plan["steps"]}
    assert plan["budget"] == options.uncertainty_budget and plan["planned"] <= plan["allowed"]
    assert steps["dropout and augmentation passes"]["images"] == sampled
    assert steps["importance tests"]["ran"] is False
    assert {test["name"] for test in method["tests"]} == {
        "selectivity",
        "specificity",
        "keep_only",
        "difference",
        "importance",
    }
    summary = job["summary"]
    assert summary["memberships"] == sum(len(c["neurons"]) for c in hierarchy["clusters"])
    tested = 0
    for cluster in hierarchy["clusters"]:
        for neuron in cluster["neurons"]:
            evidence = neuron["evidence"]
            low, high = evidence["interval"]
            assert low <= neuron["support"] <= high
            assert evidence["generic"] == (not evidence["selective"])
            assert evidence["count"] == round(neuron["support"] * cluster["size"])
            assert (evidence["reliable"] is None) == (cluster["size"] < 6)  # Clopper-Pearson at 0.05
        uncertainty = cluster["uncertainty"]
        state = uncertainty["specificity"]
        # never a bare absence: a concept is tested, or says why not
        assert state["status"] in ("tested", "budget", "too_few_images", "no_group"), state
        if state["status"] == "too_few_images":
            assert state["note"] == f"not tested: {cluster['size']} images"
        tested += state["status"] == "tested"
        assert (uncertainty["difference_test"] is None) == (cluster["parent"] is None)
        assert uncertainty["importance"]["status"] in ("off", "no_group")
    assert tested == summary["specificity"]["tested"] == steps["specificity tests"]["tested"] > 0
    # Assembly validates through the contract and does not walk the document with jsonschema
    # again (17 s of a 22 s assembly at 1,024 images); what it writes still meets the schema.
    store = LocalStore(tmp_path / "out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonschema, "validate", _no_schema_walk)
        again = assemble_hierarchy(store, "0").document()
    written = json.loads((tmp_path / "out" / artifacts.HIERARCHY).read_text())
    validate_hierarchy(written)
    assert written == again and written["clusters"] == hierarchy["clusters"]
    _written_a_cluster_at_a_time(store)
    # a job assembled without the uncertainty stage (a suite still wiring it) stays valid
    store.delete_prefix(artifacts.UNCERTAINTY)
    plain = assemble_hierarchy(store, "0").document()
    assert "uncertainty" not in plain and "evidence" not in plain["clusters"][0]["neurons"][0]


def _written_a_cluster_at_a_time(store: LocalStore) -> None:
    """The suite's assemble step writes hierarchy.json a cluster at a time: byte for byte the
    whole `Hierarchy`'s own dump, with never more than one cluster's objects alive. Built whole,
    the document's objects took 2.4 GB more than its text at 16,384 images, past the labelling
    worker's memory limit."""
    whole = read_hierarchy(store)
    assert hierarchy_bytes(whole.model_copy(update={"clusters": []}), iter(whole.clusters)) == (
        whole.model_dump_json(indent=1).encode()
    )
    alive: set[int] = set()
    most_alive = 0
    built = Cluster.__init__

    def counted(self: Cluster, **data: object) -> None:
        nonlocal most_alive
        built(self, **data)
        alive.add(id(self))
        weakref.finalize(self, alive.discard, id(self))
        most_alive = max(most_alive, len(alive))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Cluster, "__init__", counted)
        write_hierarchy(store, "0")
    assert most_alive == 1
    rewritten = read_hierarchy(store)
    assert rewritten.model_copy(update={"created_at": whole.created_at}) == whole


def _no_schema_walk(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("assembly walked the document with jsonschema")
