import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shared.pipeline.clustering import canonical_labels, finch_partitions


def blobs(n_per: int, centres: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)) * 4
    points = np.concatenate([m + rng.normal(size=(n_per, dim)) for m in means])
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_finch_repeats_exactly_with_exact_neighbours():
    data = blobs(30, 5)
    first = finch_partitions(data, ann_threshold=10_000, seed=0)
    assert first.dtype == np.int32 and first.shape[0] == 150 and first.shape[1] >= 2
    assert np.array_equal(first, finch_partitions(data.copy(), ann_threshold=10_000, seed=0))


def test_finch_repeats_exactly_with_approximate_neighbours():
    data = blobs(60, 6, seed=1)
    first = finch_partitions(data, ann_threshold=50, seed=7)  # 360 > 50: pynndescent path
    assert np.array_equal(first, finch_partitions(data, ann_threshold=50, seed=7))


def test_exact_neighbours_never_import_pynndescent():
    # pynndescent JIT-compiles for about 30 s at import on 2 cores; below the ANN threshold it
    # never runs, so a fresh process must not pay for it (it was half of the demo's time).
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from shared.pipeline.clustering import finch_partitions
        x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
        assert finch_partitions(x).shape[0] == 200
        import finch.finch
        print("pynndescent" in sys.modules, finch.finch.pynndescent_available)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_approximate_neighbours_go_through_the_real_pynndescent():
    import finch.finch

    data = blobs(60, 6, seed=1)
    finch_partitions(data, ann_threshold=50, seed=7)
    assert "pynndescent" in sys.modules and type(sys.modules["pynndescent"].__spec__).__name__ == "ModuleSpec"
    assert finch.finch.pynndescent_available


def test_levels_nest_and_get_coarser():
    parts = finch_partitions(blobs(20, 8, seed=2))
    counts = [len(np.unique(parts[:, lv])) for lv in range(parts.shape[1])]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    for lv in range(parts.shape[1] - 1):
        for k in np.unique(parts[:, lv]):
            assert len(np.unique(parts[parts[:, lv] == k, lv + 1])) == 1


def test_cluster_numbers_follow_the_first_image_of_each_cluster():
    assert canonical_labels(np.array([5, 5, 2, 9, 2, 5])).tolist() == [0, 0, 1, 2, 1, 0]


@pytest.mark.parametrize("n", [1, 2])
def test_too_few_images_make_one_cluster(n):
    assert finch_partitions(blobs(n, 1)).tolist() == [[0]] * n


def test_blocked_exact_neighbours_match_brute_force(monkeypatch):
    from sklearn.metrics import pairwise_distances

    import shared.pipeline.clustering as clustering

    data = clustering.unit_rows(blobs(25, 4, seed=4))
    monkeypatch.setattr(clustering, "BLOCK_BYTES", 4 * len(data) * 7)  # 7 rows a block
    dist = pairwise_distances(data, metric="cosine")
    np.fill_diagonal(dist, np.inf)
    assert clustering.first_neighbours(data).tolist() == np.argmin(dist, axis=1).tolist()


def test_copies_of_one_caption_are_one_cluster_whatever_blas_threads():
    # Exact copies tie for nearest neighbour. With two BLAS threads a matrix product's rounding
    # varied with a row's position (1.0 against 1.0000001), so one caption split into clusters
    # of nearby indices: on the null benchmark's concept-sorted images, clusters of one concept
    # (issue 23). Copies must be decided as copies.
    from threadpoolctl import threadpool_limits

    from shared.pipeline.clustering import first_neighbours, unit_rows

    rng = np.random.default_rng(3)
    captions = unit_rows(rng.normal(size=(12, 384)))
    which = rng.permutation(np.repeat(np.arange(12), 20))
    data = captions[which]
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            nearest = first_neighbours(data)
            partitions = finch_partitions(data)
        for caption in range(12):
            rows = np.flatnonzero(which == caption)
            assert nearest[rows[0]] == rows[1] and (nearest[rows[1:]] == rows[0]).all(), (threads, caption)
            assert np.unique(partitions[rows, 0]).shape[0] == 1, (threads, caption)
