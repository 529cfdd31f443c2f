"""The comparison against ground truth: the planted ResNet18 (conv1 channels 0-2 detect the sand
background) compared with itself, with a copy whose sand detectors moved to channels 40-42, with
a copy whose sand detectors are zeroed, and with itself read at other layers
(tests/comparison_runs.py). The sand detectors fire on the circles' sand and on the white stripes,
so exactly the concepts holding those images may change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from neuron_atlas_client.contracts.comparison import Comparison, ConceptComparison
from neuron_atlas_client.errors import InputError
from services.uncertainty.comparison import compare_results
from shared.storage.stores import LocalStore
from tests.comparison_runs import MOVED_TO, SAND, PlantedRuns

pytestmark = pytest.mark.slow


def compare(a: Path, b: Path) -> Comparison:
    return compare_results(LocalStore(a), LocalStore(b), (str(a), str(b)))


def file_names(runs: PlantedRuns) -> dict[str, str]:
    hierarchy = json.loads((runs.original / "hierarchy.json").read_text())
    return {image["id"]: image["file_name"] for image in hierarchy["images"]}


def sand_lit(runs: PlantedRuns) -> set[str]:
    """The concepts holding images on which the sand detectors fire (circles on sand, white stripes)."""
    names = file_names(runs)
    hierarchy = json.loads((runs.original / "hierarchy.json").read_text())
    return {
        c["id"]
        for c in hierarchy["clusters"]
        if any(names[i].startswith(("circle-", "stripes-")) for i in c["images"])
    }


def channels(refs: list | None) -> list[int]:
    return [r.channel for r in refs or []]


def a_group_holds_sand(concept: ConceptComparison) -> bool:
    return any(n.in_a and n.channel in SAND for n in concept.neurons or [])


def test_the_same_checkpoint_compared_with_itself_changes_nothing(planted_runs: PlantedRuns) -> None:
    comparison = compare(planted_runs.original, planted_runs.original)
    assert comparison.method.mode == "same_layers"
    assert comparison.summary.changed == 0 and comparison.summary.significant_changes == 0
    assert comparison.summary.vanished == comparison.summary.appeared == []
    assert comparison.summary.min_kept_share == 1.0 and comparison.summary.mean_jaccard == 1.0
    for concept in comparison.concepts:
        assert concept.status in {"unchanged", "no_group"}
        assert not concept.gained and not concept.lost
        for neuron in concept.neurons or []:
            assert (neuron.a_only, neuron.b_only, neuron.support_p) == (0, 0, 1.0)
            assert neuron.selectivity_p in (None, 1.0)
        if concept.a.causal.status == "tested":
            assert concept.causal_change == 0.0


def test_a_detector_moved_to_another_channel_is_named_and_nothing_else(planted_runs: PlantedRuns) -> None:
    comparison = compare(planted_runs.original, planted_runs.moved)
    lit = sand_lit(planted_runs)
    significant = {(c.id, n.channel) for c in comparison.concepts for n in c.neurons or [] if n.significant}
    # exactly the moved channels, in every testable concept that holds the sand-lit images
    expected = {(c.id, n) for c in comparison.concepts if c.id in lit and c.testable for n in SAND + MOVED_TO}
    assert significant == expected and expected
    for concept in comparison.concepts:
        if a_group_holds_sand(concept):  # the group lost the detectors and gained their new channels
            assert channels(concept.lost) == SAND and channels(concept.gained) == MOVED_TO
            assert concept.status == ("changed" if concept.testable else "unchanged")
        else:
            assert not concept.lost and not concept.gained
        if concept.id not in lit:  # no image of it lights the detectors: not one activity moved
            assert concept.status in {"unchanged", "no_group"} and concept.kept_share in (1.0, None)
            assert all(n.a_only == n.b_only == 0 for n in concept.neurons or [])
    for concept in comparison.concepts:  # the move keeps each activity, under its new index
        support = {n.channel: (n.support_a, n.support_b) for n in concept.neurons or []}
        for old, new in zip(SAND, MOVED_TO, strict=True):
            if old in support:
                assert support[old][1] == 0.0 and support[new] == (0.0, support[old][0])
    (conv1,) = comparison.layers or []
    assert conv1.gained == conv1.lost == 3 * sum(a_group_holds_sand(c) for c in comparison.concepts)


def test_a_zeroed_detector_is_lost_where_it_was_and_nothing_changes_elsewhere(
    planted_runs: PlantedRuns,
) -> None:
    comparison = compare(planted_runs.original, planted_runs.zeroed)
    lit = sand_lit(planted_runs)
    for concept in comparison.concepts:
        assert channels(concept.lost) == (SAND if a_group_holds_sand(concept) else [])
        changed = [n for n in concept.neurons or [] if n.significant]
        if concept.id not in lit:
            assert concept.status in {"unchanged", "no_group"} and not changed
            assert all(n.a_only == n.b_only == 0 for n in concept.neurons or [])
            continue
        if concept.testable and a_group_holds_sand(concept):
            assert concept.status == "changed"
            lost = {n.channel for n in changed if n.support_change < 0}
            assert lost == set(SAND)  # the zeroed detectors, and no other neuron, lost support
            assert concept.kept_share == pytest.approx(1 - 3 / concept.a.group_size)
            # the causal test found the group's effect in A and none in B
            if concept.a.causal.status == concept.b.causal.status == "tested":
                assert concept.causal_change is not None and concept.causal_change < -0.3
    assert comparison.summary.vanished == []


def test_other_layers_are_compared_side_by_side_and_untested_stays_untested(
    planted_runs: PlantedRuns,
) -> None:
    comparison = compare(planted_runs.original, planted_runs.more_layers)
    assert comparison.method.mode == "different_layers"
    assert "different layers" in comparison.method.mode_reason
    assert comparison.layers is None and comparison.summary.tests == 0
    document = json.loads((planted_runs.more_layers / "hierarchy.json").read_text())
    more = {c["id"]: c for c in document["clusters"]}
    for concept in comparison.concepts:
        assert concept.neurons is None and concept.kept_share is None and concept.jaccard is None
        assert concept.b.group_size == len(more[concept.id]["neurons"])
        assert concept.status in {"in_both", "no_group", "vanished", "appeared"}
        # the run without model passes tested no concept: it says so, with no effect
        assert concept.b.causal.status == "off" and concept.b.causal.effect is None
        assert concept.b.causal.note.startswith("not run") and concept.causal_change is None
        if concept.a.causal.status == "tested":
            assert concept.a.causal.effect is not None


def test_results_over_other_images_or_another_concept_tree_are_refused(
    planted_runs: PlantedRuns, tmp_path: Path
) -> None:
    fewer = tmp_path / "fewer"
    shutil.copytree(planted_runs.original, fewer)
    document = json.loads((fewer / "hierarchy.json").read_text())
    document["images"] = document["images"][1:]
    (fewer / "hierarchy.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="not over the same images: 1 only in"):
        compare(planted_runs.original, fewer)

    regrouped = tmp_path / "regrouped"
    shutil.copytree(planted_runs.original, regrouped)
    document = json.loads((regrouped / "hierarchy.json").read_text())
    first, second = (c for c in document["clusters"] if c["level"] == 1 and c["id"] in ("L1-0", "L1-6"))
    first["images"][0], second["images"][0] = second["images"][0], first["images"][0]
    (regrouped / "hierarchy.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="concept trees differ: 2 concepts hold other images") as caught:
        compare(planted_runs.original, regrouped)
    assert "same captions" in caught.value.fix

    with pytest.raises(InputError, match=r"holds no hierarchy\.json"):
        compare(planted_runs.original, tmp_path)


def test_another_architecture_has_no_neuron_identity_even_with_the_same_layer_names(
    planted_runs: PlantedRuns, tmp_path: Path
) -> None:
    """A ResNet34 reads conv1 with 64 channels too; its channel 0 is not the ResNet18's."""
    other = tmp_path / "resnet34"
    shutil.copytree(planted_runs.zeroed, other)
    document = json.loads((other / "hierarchy.json").read_text())
    document["models"]["target"]["architecture"] = "resnet34"
    (other / "hierarchy.json").write_text(json.dumps(document))
    comparison = compare(planted_runs.original, other)
    assert comparison.method.mode == "different_layers"
    assert comparison.method.mode_reason.startswith("different architectures (resnet18, resnet34)")
    for concept in comparison.concepts:
        assert concept.neurons is None and concept.gained is None and concept.kept_share is None
        # side by side: each model's own group, selectivity and causal effect
        if concept.a.causal.status == concept.b.causal.status == "tested":
            assert concept.causal_change == pytest.approx(
                concept.b.causal.effect - concept.a.causal.effect, abs=1e-6
            )
    sand = next(c for c in comparison.concepts if c.id == "L2-0")
    assert sand.status == "in_both" and sand.a.selectivity is not None and sand.b.selectivity is not None
