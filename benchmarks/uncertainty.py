"""Benchmark of the uncertainty stage, method by method.

1. The statistics without model passes (intervals and tests with BH, the group bootstrap, the
   clustering resamples, the difference permutation tests) on a synthetic job the size of the
   reference run: 25,000 images, 6 nested levels, 960 neurons (all ResNet18 stage channels), 200
   bootstrap resamples. Baseline in the same run: the groups stage (`build_groups`) on the same
   arrays. Target: under 60 s on a 2-core machine.
2. The model passes of every method (dropout and augmentation passes, pruning curve, specificity
   and importance tests) on ResNet18 (random weights) over a few hundred small images, with
   `--uncertainty-budget full` so every method runs on everything, each as a ratio to one plain
   forward pass over the same images (uncertainty_timing.json's phases).

    python benchmarks/uncertainty.py [--images 25000] [--model-images 200] [--skip-model]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from PIL import Image

from neuron_atlas_client.options import PipelineOptions
from neuron_core import active_sets, hooks
from neuron_core.groups import build_groups
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty.stage import JobArrays, ModelSide, computed_with_timing

RESNET18_LAYERS = [("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)]


def layer_infos() -> list[LayerInfo]:
    infos, offset = [], 0
    for name, channels in RESNET18_LAYERS:
        infos.append(LayerInfo(name, channels, offset))
        offset += channels
    return infos


def nested_partitions(n: int, sizes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Level 1 with sizes[0] clusters, each next level merging whole clusters of the one below."""
    labels = rng.integers(0, sizes[0], n)
    labels = np.unique(labels, return_inverse=True)[1]
    columns = [labels]
    for k in sizes[1:]:
        k_prev = int(columns[-1].max()) + 1
        merge = np.sort(rng.integers(0, k, k_prev))
        merge = np.unique(merge, return_inverse=True)[1]
        columns.append(merge[columns[-1]])
    return np.stack(columns, axis=1).astype(np.int32)


def synthetic_job(
    n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[LayerInfo]]:
    """Partitions, pooled activations and active sets where every level-1 cluster prefers some
    neurons, and caption-like embeddings that cluster alike."""
    layers = layer_infos()
    partitions = nested_partitions(n, [2500, 700, 200, 50, 12, 3], rng)
    n_neurons = sum(layer.channels for layer in layers)
    # a top-level concept and a level-1 concept each lift a random 4% of the neurons
    prefs = []
    for level in (0, 5):
        k = int(partitions[:, level].max()) + 1
        prefs.append((rng.random((k, n_neurons)) < 0.04).astype(np.float32)[partitions[:, level]])
    pooled = rng.normal(size=(n, n_neurons)).astype(np.float32) + 2.5 * prefs[0] + 1.5 * prefs[1]
    return partitions, pooled, active_sets.active_mask(pooled, layers, 0.1, "per_layer"), layers


def bench_statistics(n: int, resamples: int) -> None:
    rng = np.random.default_rng(0)
    partitions, pooled, mask, layers = synthetic_job(n, rng)
    centres = rng.normal(size=(int(partitions[:, 0].max()) + 1, 384)).astype(np.float32)
    embeddings = centres[partitions[:, 0]] + 0.3 * rng.normal(size=(n, 384)).astype(np.float32)
    options = PipelineOptions(bootstrap_resamples=resamples)
    start = time.perf_counter()
    levels = build_groups(partitions, mask, options.min_support)
    baseline = time.perf_counter() - start
    arrays = JobArrays(partitions, mask, pooled, levels, layers, embeddings)
    uncertainty, timing = computed_with_timing(arrays, options)
    elapsed = timing.seconds
    sizes = [int(partitions[:, lv].max()) + 1 for lv in range(partitions.shape[1])]
    summary = uncertainty.summary
    print(
        f"statistics: {n} images, levels {sizes}, {mask.shape[1]} neurons, {resamples} resamples, "
        f"{summary.memberships} memberships"
    )
    print(f"  groups stage (baseline): {baseline:.2f} s")
    print(f"  uncertainty statistics:  {elapsed:.2f} s  ({elapsed / baseline:.1f}x the groups stage)")
    for phase, seconds in timing.phases.items():
        print(f"    {phase}: {seconds:.2f} s")
    print(f"  target < 60 s: {'met' if elapsed < 60 else 'MISSED'}")
    print(
        f"  reliable {summary.reliable_share}, selective {summary.selective_share}, group "
        f"stability {summary.mean_group_stability}, clustering {summary.mean_clustering_stability}"
    )


def bench_model_passes(n_images: int, options: PipelineOptions) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n_images)]

    def read(rows: Sequence[int]) -> list[Image.Image]:
        return [images[i] for i in rows]

    layers = layer_infos()
    with torch.inference_mode():  # warm-up: first-call allocations are not the baseline's cost
        model(hooks.preprocess(read(range(min(8, n_images)))))
    reader = hooks.ActivationReader(model, [layer.name for layer in layers])
    start = time.perf_counter()
    pooled = np.concatenate(
        [
            reader.read(hooks.preprocess(read(range(s, min(s + options.batch_size, n_images))))).numpy()
            for s in range(0, n_images, options.batch_size)
        ]
    )
    plain = time.perf_counter() - start
    reader.close()
    mask = active_sets.active_mask(pooled, layers, options.top_fraction, options.ranking)
    # clusters of 8 images at level 1, 4 clusters on top; groups as the stage would find them
    labels = np.arange(n_images) // 8
    partitions = np.stack([labels, labels * 4 // (labels.max() + 1)], axis=1)
    levels = build_groups(partitions, mask, options.min_support)
    arrays = JobArrays(partitions, mask, pooled, levels, layers)
    side = ModelSide(model, read, torch.device("cpu"))
    uncertainty, timing = computed_with_timing(arrays, options, side)
    print(
        f"model passes: ResNet18 (random weights), {n_images} images of 64x64 on CPU, "
        f"{torch.get_num_threads()} threads, --uncertainty-budget {options.uncertainty_budget}, "
        f"passes in {uncertainty.method.pass_precision}"
    )
    print(f"  one plain forward pass, activations read (baseline): {plain:.1f} s")
    for phase, seconds in timing.phases.items():
        print(f"  {phase}: {seconds:.1f} s = {seconds / plain:.2f}x")
    for step in uncertainty.plan.steps:
        print(f"  plan: {step.name}: {'ran' if step.ran else 'not run'}, {step.cost:.0f} FPE, {step.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25_000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--model-images", type=int, default=200)
    parser.add_argument("--budget", default="full", help="--uncertainty-budget for the model passes")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-statistics", action="store_true")
    args = parser.parse_args()
    if not args.skip_statistics:
        bench_statistics(args.images, args.resamples)
    if not args.skip_model:
        budget = args.budget if args.budget == "full" else float(args.budget)
        bench_model_passes(args.model_images, PipelineOptions(uncertainty_budget=budget))


if __name__ == "__main__":
    main()
