"""Hierarchical clustering of caption embeddings with FINCH: every level it returns.

FINCH's first and most expensive step is each caption's nearest neighbour. Up to
`ann_threshold` captions we compute it exactly ourselves, as blocked matrix products over the
unit vectors: memory stays bounded (FINCH's own exact path holds several n x n matrices, about
10 GB at 25,000), and no JIT is involved (pynndescent compiles for ~30 s on 2 cores the first
time it is imported after install; numba caches the result beside the package). Above the
threshold FINCH uses pynndescent, seeded. Either way the neighbours are handed to the same FINCH
merging, so results differ by neighbour exactness alone.

It lives in `shared` because two services run it: embed_cluster for the job's partitions, and
uncertainty to re-cluster resampled images when it measures how stable the clustering is; both
must run the very same clustering. numpy and finch-clust only, and finch is imported on first
use, so importing this module costs nothing (the gateway never does).
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from typing import Any

import numpy as np

BLOCK_BYTES = 256 * 2**20  # similarity block held at once by the exact neighbour search


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 in order of their first image, so ids do not depend on FINCH's."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse].astype(np.int32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def first_neighbours(unit: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row (lowest index on ties).

    Exact copies (a caption repeated) are decided before any product: each copy's neighbour is
    the first of its copies, and the first's is the second. A matrix product cannot be trusted
    with that tie: its rounding depends on where a row falls in BLAS's blocks and threads, so
    with two threads copies scored 1.0 against 1.0000001, and one caption split into clusters
    of nearby indices, which follow the order the images were listed in (issue 23)."""
    _, first, inverse = np.unique(unit, axis=0, return_index=True, return_inverse=True)
    # distinct rows numbered by their first index, so argmax's ties still go to the lowest index
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    group = rank[inverse.ravel()]
    representative = first[order]
    distinct = unit[representative]
    m = distinct.shape[0]
    block = max(1, min(m, BLOCK_BYTES // (4 * m)))
    nearest_distinct = np.zeros(m, dtype=np.int64)
    for start in range(0, m, block):
        stop = min(m, start + block)
        sims = distinct[start:stop] @ distinct.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        nearest_distinct[start:stop] = np.argmax(sims, axis=1)
    nearest = representative[nearest_distinct[group]].astype(np.int32)
    counts = np.bincount(group, minlength=m)
    copies = np.flatnonzero(counts[group] > 1)
    if copies.shape[0]:
        by_group = np.argsort(group, kind="stable")  # each group's rows in index order
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        nearest[copies] = representative[group[copies]]
        firsts = copies[copies == representative[group[copies]]]
        nearest[firsts] = by_group[starts[group[firsts]] + 1]
    return nearest


def _deferred_nndescent(*args: Any, **kwargs: Any) -> Any:
    from pynndescent import NNDescent  # numba JIT-compiles it at import: see _finch

    return NNDescent(*args, **kwargs)


def _finch() -> Any:
    """FINCH, imported without importing pynndescent.

    `finch` imports pynndescent at its top, and pynndescent JIT-compiles its trees at import:
    29 s of a 69 s first demo on a fresh install (2 cores; numba caches it for later processes,
    which still pay 2 s), for a library that only runs above `ann_threshold`. So finch is
    imported against a stand-in module whose `NNDescent` imports the real one on first use; the
    stand-in leaves `sys.modules` again at once."""
    if "finch.finch" not in sys.modules and "pynndescent" not in sys.modules:
        stand_in = types.ModuleType("pynndescent")
        stand_in.NNDescent = _deferred_nndescent  # type: ignore[attr-defined]
        sys.modules["pynndescent"] = stand_in
        try:
            import finch.finch  # noqa: F401 (finch: the embedding stages only; see above)
        finally:
            if sys.modules.get("pynndescent") is stand_in:
                del sys.modules["pynndescent"]
    from finch import FINCH  # the stand-in above: never pynndescent's import here

    return FINCH


def finch_partitions(embeddings: np.ndarray, ann_threshold: int = 50_000, seed: int = 0) -> np.ndarray:
    """Int32 (images, levels), level 1 (the finest) first; cosine distance; reproducible."""
    n = embeddings.shape[0]
    if n < 3:
        # FINCH needs a neighbour for each point and more than one cluster to merge into.
        return np.zeros((n, 1), dtype=np.int32)
    FINCH = _finch()

    unit = unit_rows(embeddings)
    initial_rank = first_neighbours(unit) if n <= ann_threshold else None
    with contextlib.redirect_stdout(io.StringIO()):  # FINCH prints; library code must not
        partitions, _, _ = FINCH(
            unit,
            initial_rank=initial_rank,
            distance="cosine",
            ann_threshold=ann_threshold,
            random_state=seed,
            verbose=False,
        )
    partitions = np.asarray(partitions).reshape(n, -1)
    return np.stack([canonical_labels(col) for col in partitions.T], axis=1)
