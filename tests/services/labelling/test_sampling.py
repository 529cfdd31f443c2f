from __future__ import annotations

import numpy as np

from services.labelling.sampling import estimate_tokens, format_captions, sample_captions
from shared.models.sentence_embedder import Embedder


def unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_small_cluster_sends_every_distinct_caption_with_its_count() -> None:
    captions = ["a dog", "a dog", "a puppy", "a dog"]
    vectors = unit([[1, 0], [1, 0], [0.9, 0.1], [1, 0]])
    sample = sample_captions(captions, vectors, token_budget=1000)
    assert sample.lines == [("a dog", 3), ("a puppy", 1)]
    assert sample.members == 4
    assert format_captions(sample) == "- a dog [3]\n- a puppy"


def test_large_cluster_stays_within_the_budget_with_typical_and_outlying_captions() -> None:
    rng = np.random.default_rng(0)
    centre = np.array([1.0, 0.0, 0.0])
    typical = [centre + 0.05 * rng.standard_normal(3) for _ in range(500)]
    outlier = np.array([0.2, 1.0, 0.0])
    vectors = unit([*typical, outlier])
    captions = [f"caption number {i} of a typical member" for i in range(500)] + ["the odd one out"]
    sample = sample_captions(captions, vectors, token_budget=200)
    shown = [text for text, _ in sample.lines]
    assert sum(estimate_tokens(text) for text in shown) <= 200
    assert 3 < len(shown) < 30
    nearest = int(np.argmax(vectors[:500] @ vectors.mean(axis=0)))
    assert shown[0] == captions[nearest]  # the most typical caption leads
    assert "the odd one out" in shown  # spread: the farthest caption is picked early


def test_sample_is_deterministic(embedder: Embedder) -> None:
    captions = [f"a photo of a {w}" for w in ["dog", "cat", "car", "boat", "tree", "house"] * 20]
    vectors = embedder.embed(captions)
    assert sample_captions(captions, vectors, 60) == sample_captions(captions, vectors, 60)
