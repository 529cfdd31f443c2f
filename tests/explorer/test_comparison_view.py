"""The data the explorer's comparison view reads (services/gateway/explorer/comparison_view.py),
built from real comparisons of the planted runs (tests/comparison_runs.py): the planted ResNet18
against its copy with the sand detectors (conv1 channels 0-2) zeroed, against itself, and against
itself read at other layers. Each answer is checked against comparison.json and the two
hierarchy.json files it is drawn from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.gateway.explorer.comparison_report import load_comparison_view, write_comparison_report
from services.gateway.explorer.comparison_view import (
    CHANGED_KINDS,
    MARKERS,
    ComparisonView,
    comparison_view,
    marker_kind,
)
from services.uncertainty.comparison import compare_results
from shared.storage.stores import LocalStore
from tests.comparison_runs import SAND, PlantedRuns

pytestmark = pytest.mark.slow
SAND_CONCEPT = "L2-0"  # blue circles on sand: its group in A holds the sand detectors


def _view(a: Path, b: Path) -> ComparisonView:
    document = compare_results(LocalStore(a), LocalStore(b), (str(a), str(b))).document()
    return load_comparison_view(document, a, b)


@pytest.fixture(scope="module")
def zeroed(planted_runs: PlantedRuns) -> ComparisonView:
    return _view(planted_runs.original, planted_runs.zeroed)


def _group(hierarchy: dict[str, Any], concept: str) -> set[tuple[str, int]]:
    cluster = next(c for c in hierarchy["clusters"] if c["id"] == concept)
    return {(n["layer"], n["channel"]) for n in cluster["neurons"]}


def _walk(view: ComparisonView, parent: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for row in view.children(parent)["items"]:
        rows.append(row)
        rows.extend(_walk(view, row["id"]) if row["children"] else [])
    return rows


def test_the_tree_holds_every_concept_once_with_its_documents_marker(zeroed: ComparisonView) -> None:
    rows = _walk(zeroed)
    document = {c["id"]: c for c in zeroed.comparison["concepts"]}
    assert sorted(r["id"] for r in rows) == sorted(document)
    for row in rows:
        concept = document[row["id"]]
        assert row["marker"]["kind"] == marker_kind(concept)
        assert row["marker"]["text"] == MARKERS[row["marker"]["kind"]]["text"]
        assert row["label"] == next(
            c["label"] for c in zeroed.hierarchy_a["clusters"] if c["id"] == row["id"]
        )
        # an unchanged concept too small for any change to reach alpha says so
        if concept["status"] == "unchanged" and concept["testable"] is False:
            assert row["marker"]["kind"] == "untested"
    counts = zeroed.summary()["counts"]
    assert sum(counts.values()) == len(document)
    assert counts["changed"] == zeroed.comparison["summary"]["changed"] > 0


def test_the_changed_filter_lists_exactly_the_changed_concepts_with_their_paths(
    zeroed: ComparisonView,
) -> None:
    changed = zeroed.changed()
    wanted = {c["id"] for c in zeroed.comparison["concepts"] if c["status"] in CHANGED_KINDS}
    assert {r["id"] for r in changed["items"]} == wanted and changed["total"] == len(wanted)
    assert SAND_CONCEPT in wanted
    row = next(r for r in changed["items"] if r["id"] == SAND_CONCEPT)
    parent = next(c for c in zeroed.hierarchy_a["clusters"] if c["id"] == SAND_CONCEPT)["parent"]
    assert row["path"][-1]["id"] == parent
    # every ancestor of a changed concept counts it below itself, so a closed row still shows it
    top = next(r for r in zeroed.children(None)["items"] if r["id"] == row["path"][0]["id"])
    assert top["changed_below"] >= 1


def test_a_concept_shows_both_groups_with_the_lost_and_gained_neurons(zeroed: ComparisonView) -> None:
    page = zeroed.concept(SAND_CONCEPT)
    document = next(c for c in zeroed.comparison["concepts"] if c["id"] == SAND_CONCEPT)
    (layer,) = page["layers"]
    # each column is that model's own group, as its hierarchy.json has it
    assert {(layer["layer"], c["channel"]) for c in layer["a"]} == _group(zeroed.hierarchy_a, SAND_CONCEPT)
    assert {(layer["layer"], c["channel"]) for c in layer["b"]} == _group(zeroed.hierarchy_b, SAND_CONCEPT)
    lost = [c["channel"] for c in layer["a"] if c["lost"]]
    gained = [c["channel"] for c in layer["b"] if c["gained"]]
    assert lost == SAND == [n["channel"] for n in document["lost"]]
    assert gained == [n["channel"] for n in document["gained"]] and gained
    # the zeroed detectors lost all their support, beyond same-model noise
    assert all(
        c["significant"] and c["change"] == -1.0 and c["q"] <= page["alpha"] for c in layer["a"] if c["lost"]
    )
    assert page["jaccard"] == round(document["jaccard"], 3)
    assert page["sides"]["a"]["causal"]["significant"] is True
    assert page["sides"]["b"]["causal"]["significant"] is False
    assert page["causal_change"] == pytest.approx(document["causal_change"], abs=1e-4)
    rows = page["neurons"]
    assert len(rows) == len(document["neurons"])
    assert [r["significant"] for r in rows] == sorted((r["significant"] for r in rows), reverse=True)
    assert any("same model" in t["text"].lower() for t in page["tests"])  # the null, in words


def test_the_same_checkpoint_shows_no_changed_concept_and_no_gained_or_lost_neuron(
    planted_runs: PlantedRuns,
) -> None:
    view = _view(planted_runs.original, planted_runs.original)
    assert view.changed()["total"] == 0
    for concept in view.concepts:
        for layer in view.concept(concept)["layers"]:
            assert not any(c["lost"] for c in layer["a"]) and not any(c["gained"] for c in layer["b"])


def test_other_layers_are_side_by_side_without_neuron_identity(planted_runs: PlantedRuns) -> None:
    view = _view(planted_runs.original, planted_runs.more_layers)
    assert view.summary()["mode"] == "different_layers"
    for concept in view.concepts:
        page = view.concept(concept)
        assert page["neurons"] == [] and page["gained"] == page["lost"] == 0
        for side, hierarchy in (("a", view.hierarchy_a), ("b", view.hierarchy_b)):
            sizes = {row["layer"]: row["group"] for row in page["layers"] if row["model"] == side}
            assert sum(sizes.values()) == len(_group(hierarchy, concept)) == page["sides"][side]["group_size"]
        assert page["marker"]["kind"] in {"vanished", "appeared", "no_group", "in_both"}


def test_the_static_folder_has_a_data_file_per_concept(zeroed: ComparisonView, tmp_path: Path) -> None:
    index = write_comparison_report(tmp_path, zeroed)
    assert 'content="comparison"' in index.read_text()
    data = tmp_path / "explorer" / "data" / "comparison"
    assert {p.stem for p in (data / "concept").glob("*.js")} == set(zeroed.concepts)
    text = (data / "concept" / f"{SAND_CONCEPT}.js").read_text()
    assert text.startswith(f'atlasData("comparison/concept/{SAND_CONCEPT}",')
    assert json.loads(text[text.index(",") + 1 : text.rindex(")")])["lost"] == len(SAND)


def test_a_hierarchy_of_another_result_is_refused(zeroed: ComparisonView) -> None:
    other: dict[str, Any] = {
        "clusters": [{"id": "X", "parent": None, "children": [], "label": "x", "level": 1, "size": 1}]
    }
    with pytest.raises(ValueError, match="not in model A's hierarchy"):
        comparison_view(zeroed.comparison, other, zeroed.hierarchy_b)
