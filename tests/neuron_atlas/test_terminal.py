"""The text the CLI prints about a result: the tree and its per-cluster evidence."""

from __future__ import annotations

import io
from typing import Any

from neuron_atlas.terminal import print_tree
from neuron_atlas_client.contracts.hierarchy import Cluster, ClusterUncertainty, Hierarchy, Neuron
from neuron_atlas_client.contracts.uncertainty import Importance, Specificity
from neuron_atlas_client.options import PipelineOptions


def _neurons(*channels: int) -> list[Neuron]:
    return [Neuron(layer="layer4", channel=c, support=0.75) for c in channels]


def _cluster(id: str, level: int, parent: str | None, children: list[str], **fields: Any) -> Cluster:
    description = fields.pop("difference_description", None)
    values: dict[str, Any] = {
        "id": id,
        "level": level,
        "parent": parent,
        "children": children,
        "size": 4,
        "images": ["0" * 64],
        "label": id.lower(),
        "label_source": "offline",
        "label_model": None,
        "label_prompt_version": None,
        "label_warning": None,
        "label_quality": None,
        "neurons": [],
        "difference_neurons": [],
        "difference_description": description,
        "difference_source": "offline" if description else None,
        "uncertainty": ClusterUncertainty(
            group_stability=1.0,
            specificity=Specificity(status="no_group", note="no group to test"),
            importance=Importance(status="off", note="not run"),
            difference_test=None,
        ),
    }
    return Cluster(**(values | fields))


def _tree(clusters: list[Cluster], group_rule: str = "intersect") -> str:
    hierarchy = Hierarchy.model_construct(
        clusters=clusters,
        options=PipelineOptions(group_rule=group_rule),  # type: ignore[arg-type]
    )
    out = io.StringIO()
    print_tree(hierarchy, 2, out)
    return out.getvalue()


def test_a_child_that_adds_no_neuron_shows_no_difference_description():
    text = _tree(
        [
            _cluster("L2-0", 2, None, ["L1-0", "L1-1"], neurons=_neurons(1)),
            _cluster("L1-0", 1, "L2-0", [], neurons=_neurons(1), difference_description="snowy forest"),
            _cluster(
                "L1-1",
                1,
                "L2-0",
                [],
                neurons=_neurons(1, 2, 3),
                difference_neurons=_neurons(2, 3),
                difference_description="sandy beach",
            ),
        ]
    )
    assert "+0 neurons" not in text and "snowy forest" not in text
    assert "[+2 neurons: sandy beach]" in text


def test_an_empty_group_shows_no_stability():
    text = _tree([_cluster("L1-0", 1, None, [])])
    assert "stable" not in text
    assert "(4 images, 0 neurons, 0 reliable)" in text
    full = _tree([_cluster("L1-0", 1, None, [], neurons=_neurons(1, 2))])
    assert "stable 1.00" in full


def test_an_empty_intersection_says_its_children_share_no_neuron():
    clusters = [
        _cluster("L2-0", 2, None, ["L1-0", "L1-1"]),
        _cluster("L1-0", 1, "L2-0", [], neurons=_neurons(1), difference_neurons=_neurons(1)),
        _cluster("L1-1", 1, "L2-0", [], neurons=_neurons(2), difference_neurons=_neurons(2)),
    ]
    text = _tree(clusters)
    top = text.splitlines()[0]
    assert top == "L2-0  'l2-0'  (4 images, no neuron common to all its children, 0 reliable)"
    # under the direct rule an empty group is recounted, not an intersection: no such claim
    assert "common to all its children" not in _tree(clusters, group_rule="direct")
