"""Two finished results read for a comparison, checked to be over the same images and the same
concept tree, with each model's active sets in one image order (docs/comparison.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuron_atlas_client.contracts.hierarchy import Cluster, Hierarchy
from neuron_atlas_client.errors import InputError
from neuron_core.active_sets import ActiveSets, read_active_sets
from shared.pipeline.hierarchy import read_hierarchy
from shared.storage import artifacts
from shared.storage.stores import Store

# Options that decide the groups: with any of them different, a changed group says as much
# about the options as about the model.
GROUP_OPTIONS = ("top_fraction", "ranking", "min_support", "group_rule", "exclude_generic")
SAME_TREE_FIX = (
    "Compare results of the same images run with the same captions and clustering options "
    "(caption_model, embed_model, seed, or the same --captions file): concepts come from the "
    "captions, so only then do the two results share one concept tree."
)


@dataclass(frozen=True)
class Result:
    """One result: its hierarchy, its clusters by id, and its active sets, rows in the
    comparison's image order."""

    source: str
    hierarchy: Hierarchy
    active: ActiveSets
    clusters: dict[str, Cluster]

    def group(self, cluster_id: str) -> np.ndarray:
        """Global neuron indices of the cluster's group, ascending."""
        offset = {layer.name: layer.offset for layer in self.active.layers}
        neurons = self.clusters[cluster_id].neurons
        return np.array(sorted(offset[n.layer] + n.channel for n in neurons), dtype=np.int64)


@dataclass(frozen=True)
class ComparisonInputs:
    a: Result
    b: Result
    image_ids: list[str]  # the shared order: A's hierarchy order
    same_layers: bool
    mode_reason: str


def _read_hierarchy(store: Store, source: str) -> Hierarchy:
    if not store.exists(artifacts.HIERARCHY):
        raise InputError(
            f"{source} holds no hierarchy.json.",
            "Point compare at the OUT_DIR of a finished `neuron-atlas run` (or a finished job).",
        )
    return read_hierarchy(store)


def _check_same_images(a: Hierarchy, b: Hierarchy, sources: tuple[str, str]) -> list[str]:
    ids_a, ids_b = [i.id for i in a.images], [i.id for i in b.images]
    only_a, only_b = set(ids_a) - set(ids_b), set(ids_b) - set(ids_a)
    if only_a or only_b:
        names = {i.id: i.file_name for i in [*a.images, *b.images]}
        examples = ", ".join(sorted(names[i] for i in (only_a | only_b))[:3])
        raise InputError(
            f"The two results are not over the same images: {len(only_a)} only in {sources[0]}, "
            f"{len(only_b)} only in {sources[1]} (matched by the sha256 of their bytes; e.g. {examples}).",
            "Run both models on the same image folder (or submission), then compare.",
        )
    return ids_a


def _check_same_tree(a: Hierarchy, b: Hierarchy) -> None:
    tree_a = {c.id: (c.level, c.parent, frozenset(c.images)) for c in a.clusters}
    tree_b = {c.id: (c.level, c.parent, frozenset(c.images)) for c in b.clusters}
    if tree_a.keys() != tree_b.keys():
        differ = sorted(tree_a.keys() ^ tree_b.keys())
        raise InputError(
            f"The concept trees differ: {len(tree_a)} concepts against {len(tree_b)} "
            f"(e.g. {', '.join(differ[:3])} in one only).",
            SAME_TREE_FIX,
        )
    moved = [cid for cid in tree_a if tree_a[cid] != tree_b[cid]]
    if moved:
        raise InputError(
            f"The concept trees differ: {len(moved)} concepts hold other images or parents "
            f"(e.g. {', '.join(moved[:3])}).",
            SAME_TREE_FIX,
        )


def _check_group_options(a: Hierarchy, b: Hierarchy) -> None:
    differ = [
        f"{name} {getattr(a.options, name)} against {getattr(b.options, name)}"
        for name in GROUP_OPTIONS
        if getattr(a.options, name) != getattr(b.options, name)
    ]
    if differ:
        raise InputError(
            "The two results chose their groups with different options: " + "; ".join(differ) + ".",
            "Run both models with the same group options, so that a changed group is the model's doing.",
        )


def _mode(a: Hierarchy, b: Hierarchy) -> tuple[bool, str]:
    arch_a, arch_b = a.models.target.architecture, b.models.target.architecture
    layers_a = [(layer.name, layer.channels) for layer in a.layers]
    layers_b = [(layer.name, layer.channels) for layer in b.layers]
    if arch_a != arch_b:
        return False, f"different architectures ({arch_a}, {arch_b}): no neuron corresponds to another"
    if layers_a != layers_b:
        return False, f"the same architecture ({arch_a}) read at different layers"
    return True, f"the same architecture ({arch_a}) and layers: neurons correspond by index"


def read_inputs(store_a: Store, store_b: Store, sources: tuple[str, str]) -> ComparisonInputs:
    """Both results, checked to be comparable; an InputError that says why not."""
    hierarchy_a = _read_hierarchy(store_a, sources[0])
    hierarchy_b = _read_hierarchy(store_b, sources[1])
    image_ids = _check_same_images(hierarchy_a, hierarchy_b, sources)
    _check_same_tree(hierarchy_a, hierarchy_b)
    _check_group_options(hierarchy_a, hierarchy_b)
    same_layers, reason = _mode(hierarchy_a, hierarchy_b)
    results = []
    for store, source, hierarchy in ((store_a, sources[0], hierarchy_a), (store_b, sources[1], hierarchy_b)):
        try:
            active = read_active_sets(store, order=image_ids)
        except (FileNotFoundError, KeyError):
            raise InputError(
                f"{source} lacks the activation shards of its images (activations/*.npz).",
                "Compare complete result folders: hierarchy.json and the artifacts beside it.",
            ) from None
        results.append(Result(source, hierarchy, active, {c.id: c for c in hierarchy.clusters}))
    return ComparisonInputs(results[0], results[1], image_ids, same_layers, reason)
