from __future__ import annotations

import numpy as np
import pytest

from services.labelling.quality import auroc, label_quality, quality_summary, siblings
from shared.models.sentence_embedder import Embedder
from shared.pipeline.tree import build_tree
from tests.services.labelling.conftest import PARTITIONS


def test_auroc_is_one_for_perfect_separation_half_for_ties_zero_reversed() -> None:
    high, low = np.array([0.9, 0.8]), np.array([0.1, 0.2, 0.3])
    assert auroc(high, low) == 1.0
    assert auroc(low, high) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
    assert auroc(np.array([0.9, 0.2]), np.array([0.5])) == 0.5


def test_auroc_is_the_pairwise_share_with_ties_counting_half() -> None:
    """Against its definition, counted pair by pair, on scores with many ties."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        positives = rng.integers(0, 6, rng.integers(1, 30)) / 5
        negatives = rng.integers(0, 6, rng.integers(1, 30)) / 5
        above = (positives[:, None] > negatives[None, :]).sum()
        tied = (positives[:, None] == negatives[None, :]).sum()
        expected = (above + tied / 2) / (len(positives) * len(negatives))
        assert auroc(positives, negatives) == pytest.approx(expected, abs=1e-12)


def test_siblings_are_the_parents_other_children_and_at_the_top_the_other_roots() -> None:
    tree = build_tree(PARTITIONS)
    found = {cid: [n.id for n in nodes] for cid, nodes in siblings(tree).items()}
    assert found["L1-0"] == ["L1-1"]
    assert found["L1-3"] == ["L1-2"]
    assert found["L2-0"] == ["L2-1"]


def test_a_fitting_label_scores_high_and_a_swapped_label_low(
    embedder: Embedder, caption_vectors: np.ndarray
) -> None:
    tree = build_tree(PARTITIONS)
    texts = {"L1-0": "a dog on grass", "L1-1": "a cat on a sofa", "L1-2": "a car on a street"}
    texts |= {"L1-3": "a dog on grass", "L2-0": "pets", "L2-1": "vehicles"}  # L1-3 holds boats
    vectors = dict(zip(texts, embedder.embed(list(texts.values())), strict=True))
    scores = label_quality(tree, vectors, caption_vectors)
    assert scores["L1-0"] == 1.0 and scores["L1-1"] == 1.0
    assert scores["L1-3"] is not None and scores["L1-3"] < 0.5
    summary = quality_summary(tree, scores)
    assert summary["clusters_scored"] == 6
    assert summary["min"] == min(s for s in scores.values() if s is not None)
    assert summary["per_level"][0]["mean"] == pytest.approx(
        np.mean([scores[f"L1-{i}"] for i in range(4)]), abs=1e-4
    )


def test_a_cluster_without_siblings_is_not_scored(caption_vectors: np.ndarray) -> None:
    tree = build_tree(np.zeros((12, 1), dtype=np.int32))
    scores = label_quality(tree, {"L1-0": caption_vectors[0]}, caption_vectors)
    assert scores == {"L1-0": None}
    assert quality_summary(tree, scores)["mean"] is None
