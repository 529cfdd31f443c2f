"""Clustering stability: FINCH re-run on subsamples of the images, each cluster matched with its
best-matching resampled cluster by Jaccard."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import scipy.sparse as sp

from neuron_atlas.sample import CONCEPTS, make_sample
from services.uncertainty.cluster_stability import best_match_jaccard, clustering_stability
from shared.models.sentence_embedder import Embedder
from shared.pipeline.clustering import finch_partitions


@pytest.fixture(scope="module")
def concept_embeddings(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Real embeddings of the captions the sample collection writes: 6 concepts, 20 images each."""
    folder = make_sample(tmp_path_factory.mktemp("sample"), per_concept=20, size=16)
    with (folder / "metadata.csv").open(newline="") as handle:
        captions = [row["caption"] for row in csv.DictReader(handle)]
    return Embedder().embed(captions)


def random_unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 384)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def level_means(embeddings: np.ndarray, resamples: int = 20) -> list[float]:
    result = clustering_stability(embeddings, finch_partitions(embeddings), resamples, seed=1)
    return [float(np.mean(level)) for level in result.jaccard]


def test_well_separated_concepts_are_stable_at_every_level(concept_embeddings: np.ndarray) -> None:
    partitions = finch_partitions(concept_embeddings)
    concepts = np.repeat(np.arange(len(CONCEPTS)), 20)
    concept_level = next(lv for lv in range(partitions.shape[1]) if partitions[:, lv].max() + 1 == 6)
    assert np.array_equal(partitions[:, concept_level], concepts)  # the planted concepts are a level
    means = level_means(concept_embeddings)
    assert min(means) > 0.95, means


def test_clusters_of_random_vectors_are_much_less_stable(concept_embeddings: np.ndarray) -> None:
    planted = level_means(concept_embeddings)
    random = level_means(random_unit_vectors(concept_embeddings.shape[0]))
    assert random[0] < planted[0] - 0.2, (random, planted)  # level 1
    assert max(random[1:]) < 0.7, random  # coarser levels: clusters of nothing dissolve


def test_the_same_seed_gives_the_same_numbers() -> None:
    x = random_unit_vectors(90, seed=2)
    partitions = finch_partitions(x)
    first = clustering_stability(x, partitions, 6, fraction=0.7, seed=5)
    again = clustering_stability(x, partitions, 6, fraction=0.7, seed=5)
    other = clustering_stability(x, partitions, 6, fraction=0.7, seed=6)
    assert all(
        np.array_equal(a, b, equal_nan=True) for a, b in zip(first.jaccard, again.jaccard, strict=True)
    )
    assert all(np.array_equal(a, b) for a, b in zip(first.present, again.present, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first.jaccard, other.jaccard, strict=True))
    assert (first.resamples, first.fraction, first.seed, first.ann_threshold) == (6, 0.7, 5, 50_000)


def test_all_the_images_give_jaccard_one_for_every_cluster() -> None:
    x = random_unit_vectors(80, seed=3)
    partitions = finch_partitions(x, seed=4)
    result = clustering_stability(x, partitions, 2, fraction=1.0, seed=4)
    assert [level.shape[0] for level in result.jaccard] == [int(c.max()) + 1 for c in partitions.T]
    assert all(np.array_equal(level, np.ones_like(level)) for level in result.jaccard)
    assert all((count == 2).all() for count in result.present)


def test_a_cluster_found_one_level_up_in_the_resample_still_matches(concept_embeddings: np.ndarray) -> None:
    # The job's level 1 here is FINCH's concept level: re-clustering all images finds each concept
    # only at that coarser level, never at level 1, and it must still count as found.
    finch = finch_partitions(concept_embeddings)
    concept_level = int(np.argmax(finch.max(axis=0) + 1 == 6))
    assert concept_level > 0
    job = finch[:, concept_level : concept_level + 1]
    result = clustering_stability(concept_embeddings, job, 1, fraction=1.0)
    assert np.array_equal(result.jaccard[0], np.ones(6))


def test_best_match_is_over_every_row_of_the_resample() -> None:
    original = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], float))
    level_1 = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], float)
    level_2 = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], float)
    only_level_1 = best_match_jaccard(original, sp.csr_matrix(level_1))
    both = best_match_jaccard(original, sp.csr_matrix(np.vstack([level_1, level_2])))
    assert only_level_1[:2].tolist() == [0.5, 1.0] and np.isnan(only_level_1[2])
    assert both[:2].tolist() == [1.0, 1.0] and np.isnan(both[2])
    partial = best_match_jaccard(original, sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 1]], float)))
    assert partial[:2].tolist() == [3 / 5, 1 / 5]


def test_a_cluster_never_drawn_gets_nan_and_a_count_of_zero() -> None:
    x = random_unit_vectors(30, seed=5)
    partitions = np.stack([np.arange(30), np.zeros(30, dtype=np.int64)], axis=1).astype(np.int32)
    result = clustering_stability(x, partitions, 5, fraction=0.1, seed=0)  # 3 images a resample
    singletons, everything = result.jaccard[0], result.jaccard[1]
    assert np.array_equal(np.isnan(singletons), result.present[0] == 0)
    assert 0 < np.isnan(singletons).sum() < 30 and result.present[0].sum() == 5 * 3
    assert result.present[1].tolist() == [5] and 0 < everything[0] <= 1
    none = clustering_stability(x, partitions, 0)
    assert all(np.isnan(level).all() for level in none.jaccard)
    assert all((count == 0).all() for count in none.present)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 0.0}, "must be in \\(0, 1\\]"),
        ({"fraction": 1.5}, "must be in \\(0, 1\\]"),
        ({"resamples": -1}, "0 or more"),
        ({"partitions": np.zeros((5, 1), dtype=np.int32)}, "over the same images"),
    ],
)
def test_bad_settings_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    x = random_unit_vectors(10)
    arguments: dict[str, object] = {
        "embeddings": x,
        "partitions": finch_partitions(x),
        "resamples": 1,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        clustering_stability(**arguments)  # type: ignore[arg-type]
