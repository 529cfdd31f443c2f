"""Clustering-stability benchmark: seconds per resample (FINCH re-run on a subsample plus the
matching), as a function of the number of images, for the uncertainty stage's planner.

Two kinds of embeddings per size: real all-MiniLM-L6-v2 embeddings of generated captions
(subject, look, place, detail, action: 17,280 distinct captions, repeated as real captioners
repeat), and random clustered unit vectors (400 centres, noise 0.8, as `core.py --only finch`).
The baseline, measured in the same run, is FINCH once on all n images: the stage already pays
that cost in embed_cluster, and one resample should cost about that of FINCH on fraction * n.

    PYTHONPATH=. python benchmarks/cluster_stability.py --sizes 1024 4096 16384 --resamples 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from services.uncertainty.cluster_stability import best_match_jaccard, clustering_stability, stacked_one_hot
from shared.pipeline.clustering import finch_partitions

SUBJECTS = ["dog", "cat", "horse", "red car", "bus", "sailing boat", "bicycle", "bird", "cow", "train"]
LOOKS = ["small", "large", "old", "shiny", "muddy", "young"]
PLACES = ["on the grass", "in the snow", "on a city street", "near the beach", "in a forest", "indoors"]
DETAILS = ["at sunset", "in the rain", "in bright daylight", "at night", "with people nearby", ""]
ACTIONS = [
    "",
    "standing still",
    "moving fast",
    "seen from above",
    "next to a fence",
    "in a row",
    "close up",
    "far away",
]


def generated_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(LOOKS, SUBJECTS, ACTIONS, PLACES, DETAILS))
    picks = rng.integers(0, len(combos), n)
    return [" ".join(f"a {look} {s} {a} {p} {d}".split()) for look, s, a, p, d in (combos[i] for i in picks)]


def clustered_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(400, 384))
    x = (centres[rng.integers(0, 400, n)] + rng.normal(size=(n, 384)) * 0.8).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(embeddings: np.ndarray, resamples: int, fraction: float) -> dict[str, object]:
    finch_partitions(embeddings[:64])  # imports finch outside the timings
    start = time.perf_counter()
    partitions = finch_partitions(embeddings)
    finch_s = time.perf_counter() - start
    start = time.perf_counter()
    result = clustering_stability(embeddings, partitions, resamples, fraction, seed=0)
    per_resample = (time.perf_counter() - start) / resamples
    # the matching alone, for one draw: FINCH should dominate
    rows = np.sort(np.random.default_rng(0).choice(len(embeddings), round(fraction * len(embeddings)), False))
    original, _ = stacked_one_hot(partitions)
    resampled, _ = stacked_one_hot(finch_partitions(embeddings[rows]))
    start = time.perf_counter()
    best_match_jaccard(original[:, rows], resampled)
    matching_s = time.perf_counter() - start
    return {
        "images": embeddings.shape[0],
        "finch_all_images_s": round(finch_s, 3),
        "seconds_per_resample": round(per_resample, 3),
        "ratio_to_finch": round(per_resample / finch_s, 2),
        "matching_s": round(matching_s, 4),
        "clusters": [int(c.max()) + 1 for c in partitions.T],
        "mean_jaccard": [round(float(np.nanmean(level)), 3) for level in result.jaccard],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--resamples", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.8)
    parser.add_argument(
        "--kinds", nargs="+", choices=["captions", "vectors"], default=["captions", "vectors"]
    )
    args = parser.parse_args()
    embedder = None
    for kind, n in itertools.product(args.kinds, args.sizes):
        if kind == "captions":
            from shared.models.sentence_embedder import Embedder

            embedder = embedder or Embedder()
            embeddings = embedder.embed(generated_captions(n, seed=n))
        else:
            embeddings = clustered_vectors(n, seed=n)
        row = measure(embeddings, args.resamples, args.fraction)
        print(json.dumps({"kind": kind, "fraction": args.fraction, **row}))


if __name__ == "__main__":
    main()
