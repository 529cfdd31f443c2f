"""`hierarchy.json`: the result of a job, assembled from stage outputs and checked against its
published JSON Schema (`shared/schemas/hierarchy.schema.json`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from shared.tree import ClusterNode

SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Neuron:
    layer: str
    channel: int


@dataclass(frozen=True)
class ClusterLabel:
    label: str
    source: str  # "offline", or the labeller that wrote it
    difference_description: str | None


@dataclass(frozen=True)
class LevelNeurons:
    """Per level: the group and difference masks and the support counts behind them."""

    sizes: np.ndarray
    counts: np.ndarray
    members: np.ndarray
    difference: np.ndarray


def neuron_list(
    mask_row: np.ndarray, counts_row: np.ndarray, size: int, neurons: Sequence[Neuron]
) -> list[dict[str, Any]]:
    """Neuron objects for one cluster, strongest support first (ties in neuron order)."""
    index = np.flatnonzero(mask_row)
    order = index[np.argsort(-counts_row[index], kind="stable")]
    return [
        {
            "layer": neurons[i].layer,
            "channel": neurons[i].channel,
            "support": round(float(counts_row[i]) / size, 6),
        }
        for i in order
    ]


def cluster_documents(
    tree: Sequence[Sequence[ClusterNode]],
    level_neurons: Sequence[LevelNeurons],
    neurons: Sequence[Neuron],
    labels: Mapping[str, ClusterLabel],
    image_ids: Sequence[str],
) -> list[dict[str, Any]]:
    clusters = []
    for level_nodes, groups in zip(tree, level_neurons, strict=True):
        for node in level_nodes:
            k, size = node.index, int(groups.sizes[node.index])
            label = labels[node.id]
            clusters.append(
                {
                    "id": node.id,
                    "level": node.level,
                    "parent": node.parent,
                    "children": list(node.children),
                    "size": size,
                    "images": [image_ids[i] for i in node.images],
                    "label": label.label,
                    "label_source": label.source,
                    "neurons": neuron_list(groups.members[k], groups.counts[k], size, neurons),
                    "difference_neurons": neuron_list(
                        groups.difference[k], groups.counts[k], size, neurons
                    ),
                    "difference_description": label.difference_description,
                }
            )
    return clusters


@lru_cache(maxsize=1)
def hierarchy_schema() -> dict[str, Any]:
    text = resources.files("shared").joinpath("schemas/hierarchy.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_hierarchy(document: Mapping[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` when `document` breaks the published schema."""
    import jsonschema

    jsonschema.validate(document, hierarchy_schema())
