"""Hierarchical clustering of caption embeddings with FINCH: every level it returns."""

from __future__ import annotations

import contextlib
import io

import numpy as np


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 in order of their first image, so ids do not depend on FINCH's."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int32)


def finch_partitions(embeddings: np.ndarray, ann_threshold: int = 20_000, seed: int = 0) -> np.ndarray:
    """Int32 (images, levels), level 1 (the finest) first; cosine distance.

    Exact first neighbours up to `ann_threshold` images, pynndescent above it, seeded so the
    same input gives the same partitions.
    """
    n = embeddings.shape[0]
    if n < 3:
        # FINCH needs a neighbour for each point and more than one cluster to merge into.
        return np.zeros((n, 1), dtype=np.int32)
    from finch import FINCH

    with contextlib.redirect_stdout(io.StringIO()):  # FINCH prints; library code must not
        partitions, _, _ = FINCH(
            np.ascontiguousarray(embeddings, dtype=np.float32),
            distance="cosine",
            ann_threshold=ann_threshold,
            random_state=seed,
            verbose=False,
        )
    partitions = np.asarray(partitions).reshape(n, -1)
    return np.stack([canonical_labels(col) for col in partitions.T], axis=1)
