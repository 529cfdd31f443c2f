"""The uncertainty store step on a small job written to a LocalStore, with a tiny model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.activation.activations import LayerInfo, active_mask
from services.activation.stage import write_activation_shard
from services.uncertainty.stage import uncertainty_step
from shared import artifacts
from shared.options import PipelineOptions
from shared.storage import LocalStore, get_json, put_npy

from .test_model_uncertainty import TinyNet

LAYERS = [LayerInfo("layer1", 16, 0), LayerInfo("layer2", 8, 16)]
OPTIONS = PipelineOptions(
    top_fraction=0.25, bootstrap_resamples=30, mc_samples=3, ablation_random_sets=3, ablation_max_images=3
)


def write_job(root: Path) -> tuple[LocalStore, list[str]]:
    """12 images in 4 level-1 clusters, 2 parents; each level-1 cluster lifts its own neurons."""
    store = LocalStore(root)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3)
    put_npy(store, artifacts.PARTITIONS, np.stack([labels, labels // 2], axis=1).astype(np.int32))
    pooled = rng.normal(size=(12, 24)).astype(np.float32)
    for c in range(4):
        pooled[labels == c, c * 3 : c * 3 + 3] += 5  # layer1 neurons
        pooled[labels == c, 16 + c] += 5  # a layer2 neuron
    ids = [f"{i:064x}" for i in range(12)]
    mask = active_mask(pooled, LAYERS, 0.25, "per_layer")
    write_activation_shard(store, 0, ids, pooled, mask, LAYERS, "random")
    return store, ids


def run_step(root: Path, read: Callable[[Sequence[int]], list[Image.Image]]) -> dict[str, Any]:
    store, ids = write_job(root)
    return uncertainty_step(store, OPTIONS, ids, TinyNet(p=0.2).eval(), read)


def test_step_writes_evidence_for_every_membership(
    tmp_path: Path, read_images: Callable[[Sequence[int]], list[Image.Image]]
) -> None:
    document = run_step(tmp_path, read_images)
    assert get_json(LocalStore(tmp_path), artifacts.UNCERTAINTY) == document
    level1 = document["clusters"]["L1-2"]
    members = level1["members"]
    assert {6, 7, 8, 18} <= set(members["neuron"])  # the planted ones (noise may add one)
    assert len(members["inclusion_probability"]) == len(members["neuron"])
    assert all(0 <= p <= 1 for p in level1["members"]["expected_support"])
    assert level1["causal"]["random_sets"] == 3 and level1["causal"]["images"] == 3
    assert level1["difference_test"] is not None  # the parent's group is empty: all four differ
    assert document["method"]["model_uncertainty"] == {"method": "mc_dropout", "samples": 3}
    assert (
        document["pruning"]["neurons_pruned"]
        + len(
            {
                n
                for c in document["clusters"].values()
                for n, s in zip(*[c["members"][k] for k in ("neuron", "significant")], strict=True)
                if s
            }
        )
        == 24
    )
    assert document["summary"]["clusters_checked"] == sum(
        1 for c in document["clusters"].values() if c["members"]["neuron"]
    )


def test_step_repeats_exactly(
    tmp_path: Path, read_images: Callable[[Sequence[int]], list[Image.Image]]
) -> None:
    assert run_step(tmp_path / "a", read_images) == run_step(tmp_path / "b", read_images)


def test_step_without_a_model_skips_the_model_passes(tmp_path: Path) -> None:
    store, ids = write_job(tmp_path)
    document = uncertainty_step(store, OPTIONS, ids)
    assert document["pruning"] is None and document["method"]["model_uncertainty"] is None
    assert all(c["causal"] is None for c in document["clusters"].values())
    members = document["clusters"]["L1-0"]["members"]
    planted = [
        p
        for n, p in zip(members["neuron"], members["inclusion_probability"], strict=True)
        if n in {0, 1, 2, 16}
    ]
    assert planted == [1.0, 1.0, 1.0, 1.0]  # active in all 3 images: in every resample's group
