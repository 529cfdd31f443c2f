"""Labelling stage over a job's store: `labels.json` for every cluster."""

from __future__ import annotations

from collections.abc import Sequence

from services.labelling.offline import label_tree
from shared import artifacts
from shared.hierarchy import ClusterLabel
from shared.storage import Store, get_npy, put_json
from shared.tree import build_tree


def label_step(store: Store, captions: Sequence[str]) -> dict[str, ClusterLabel]:
    """Offline labels from the captions, embeddings and partitions already in the store."""
    embeddings = get_npy(store, artifacts.EMBEDDINGS)
    tree = build_tree(get_npy(store, artifacts.PARTITIONS))
    labels = label_tree(tree, captions, embeddings)
    put_json(store, artifacts.LABELS, {cid: vars(label) for cid, label in labels.items()})
    return labels
