"""Benchmark of the difference test (services/uncertainty/difference.py) on a job shaped like a
real one: 1,024 images with caption-like embeddings drawn from a 3-deep topic tree, clustered by
the product's FINCH (the first 4 levels kept), and active sets (top 10% per layer of the 960
ResNet18 stage channels) of pooled activations in which every topic, subtopic and sub-subtopic
lifts its own 4% of the neurons. Times `difference_tests` with 999 permutations, with and
without early stopping, for both group rules: wall-clock and CPU time (the CPU time is the
better measure on a shared machine).

    python benchmarks/difference_tests.py [--images 1024] [--permutations 999]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from neuron_core import active_sets
from neuron_core.groups import build_groups
from neuron_core.neuron_axis import LayerInfo
from services.embed_cluster.clustering import finch_partitions
from services.uncertainty.difference import difference_tests

RESNET18_LAYERS = [("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)]
TREE = (6, 5, 5)  # topics, subtopics per topic, sub-subtopics per subtopic
SPREAD = (1.0, 0.6, 0.4, 0.3)  # embedding spread of each tree level around its parent, then images
LIFT = (2.0, 1.5, 1.0)  # how much each tree level's concept lifts its neurons


def layer_infos() -> list[LayerInfo]:
    infos, offset = [], 0
    for name, channels in RESNET18_LAYERS:
        infos.append(LayerInfo(name, channels, offset))
        offset += channels
    return infos


def synthetic_job(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Partitions (FINCH on the embeddings, first 4 levels) and the active-set mask."""
    layers = layer_infos()
    n_neurons = sum(layer.channels for layer in layers)
    labels = []  # per tree level, each image's node
    centres = rng.normal(0, SPREAD[0], (TREE[0], 384))
    node = rng.integers(0, TREE[0], n)
    labels.append(node)
    for depth, fan_out in enumerate(TREE[1:], start=1):
        centres = np.repeat(centres, fan_out, axis=0) + rng.normal(
            0, SPREAD[depth], (centres.shape[0] * fan_out, 384)
        )
        node = node * fan_out + rng.integers(0, fan_out, n)
        labels.append(node)
    embeddings = centres[node] + rng.normal(0, SPREAD[-1], (n, 384))
    partitions = finch_partitions(embeddings.astype(np.float32))[:, :4]
    pooled = rng.normal(size=(n, n_neurons)).astype(np.float32)
    for depth, lift in enumerate(LIFT):
        prefs = rng.random((int(labels[depth].max()) + 1, n_neurons)) < 0.04
        pooled += lift * prefs[labels[depth]]
    return partitions, active_sets.active_mask(pooled, layers, 0.1, "per_layer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--permutations", type=int, default=999)
    args = parser.parse_args()
    partitions, mask = synthetic_job(args.images, np.random.default_rng(0))
    sizes = [int(partitions[:, lv].max()) + 1 for lv in range(partitions.shape[1])]
    print(f"{args.images} images, {mask.shape[1]} neurons, clusters per level {sizes}")
    for rule in ("intersect", "direct"):
        start = time.perf_counter()
        build_groups(partitions, mask, 0.5, rule)
        groups_s = time.perf_counter() - start
        for sequential in (True, False):
            start, cpu = time.perf_counter(), time.process_time()
            results = difference_tests(
                partitions, mask, 0.5, rule, permutations=args.permutations, sequential=sequential
            )
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            statuses = Counter(r.status for r in results.values())
            tested = [r for r in results.values() if r.status == "tested"]
            significant = sum(1 for r in tested if r.p_value is not None and r.p_value <= 0.05)
            used = sum(r.permutations for r in tested)
            print(
                f"{rule:9} {'sequential' if sequential else 'all perms':10} "
                f"{elapsed:6.2f} s wall, {cpu:6.2f} s CPU "
                f"(build_groups {groups_s:.3f} s)  children {len(results)}  {dict(statuses)}  "
                f"p<=0.05: {significant}  permutations run {used}"
            )


if __name__ == "__main__":
    main()
