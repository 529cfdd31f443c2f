"""The cluster tree implied by nested partitions (images x levels, level 1 the finest)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClusterNode:
    id: str
    level: int  # 1 = finest
    index: int  # cluster number within its level
    images: np.ndarray  # indices into the job's image list
    parent: str | None = None
    children: list[str] = field(default_factory=list)


def cluster_id(level: int, index: int) -> str:
    return f"L{level}-{index}"


def build_tree(partitions: np.ndarray) -> list[list[ClusterNode]]:
    """Nodes per level (outer list index 0 = level 1), linked to parents and children."""
    n_images, n_levels = partitions.shape
    levels: list[list[ClusterNode]] = []
    order = np.arange(n_images)
    for lv in range(n_levels):
        labels = partitions[:, lv]
        sort = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[sort], np.arange(int(labels.max()) + 2))
        levels.append(
            [
                ClusterNode(cluster_id(lv + 1, k), lv + 1, k, order[sort[bounds[k] : bounds[k + 1]]])
                for k in range(len(bounds) - 1)
            ]
        )
    for lv in range(n_levels - 1):
        for node in levels[lv]:
            parent = levels[lv + 1][int(partitions[node.images[0], lv + 1])]
            node.parent = parent.id
            parent.children.append(node.id)
    return levels
