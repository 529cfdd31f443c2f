"""Benchmark of the uncertainty stage.

1. Statistics without model passes (intervals, tests, BH, bootstrap, difference tests) on a
   synthetic job the size of the reference run: 25,000 images, 6 nested levels, 960 neurons (all
   ResNet18 stage channels), 200 bootstrap resamples. Target: under 60 s on a 2-core machine.
   Baseline in the same run: the groups stage (`build_groups`) on the same arrays.
2. Model passes: dropout passes (MC or injected), causal checks and the pruning
   curve on ResNet18 (random weights) over a few hundred small images, each as a ratio to one
   plain forward pass over the same images.

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

from neuron_core import active_sets, hooks
from neuron_core.groups import build_groups
from neuron_core.layers import LayerInfo
from services.uncertainty import ablation as abl
from services.uncertainty.model_inputs import ModelInputs
from services.uncertainty.model_uncertainty import stochastic_active_sets
from services.uncertainty.pruning import curve_thresholds, pruning_cost, pruning_report
from services.uncertainty.stage import _causal_checks, compute_uncertainty
from shared.options import PipelineOptions

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


def synthetic_job(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[LayerInfo]]:
    """Partitions and active sets where every level-1 cluster prefers some neurons."""
    layers = layer_infos()
    partitions = nested_partitions(n, [2500, 700, 200, 50, 12, 3], rng)
    n_neurons = sum(layer.channels for layer in layers)
    # a top-level concept and a level-1 concept each lift a random 4% of the neurons
    prefs = []
    for level in (0, 5):
        k = int(partitions[:, level].max()) + 1
        prefs.append((rng.random((k, n_neurons)) < 0.04).astype(np.float32)[partitions[:, level]])
    pooled = rng.normal(size=(n, n_neurons)).astype(np.float32) + 2.5 * prefs[0] + 1.5 * prefs[1]
    return partitions, active_sets.active_mask(pooled, layers, 0.1, "per_layer"), layers


def bench_statistics(n: int, resamples: int) -> None:
    rng = np.random.default_rng(0)
    partitions, mask, layers = synthetic_job(n, rng)
    options = PipelineOptions(bootstrap_resamples=resamples)
    start = time.perf_counter()
    levels = build_groups(partitions, mask, options.min_support)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    document = compute_uncertainty(partitions, mask, levels, layers, options)
    elapsed = time.perf_counter() - start
    sizes = [int(partitions[:, lv].max()) + 1 for lv in range(partitions.shape[1])]
    summary = document.document()["summary"]
    print(
        f"statistics: {n} images, levels {sizes}, {mask.shape[1]} neurons, {resamples} resamples, "
        f"{summary['memberships']} memberships"
    )
    print(f"  groups stage (baseline): {baseline:.2f} s")
    print(f"  uncertainty statistics:  {elapsed:.2f} s  ({elapsed / baseline:.1f}x the groups stage)")
    print(f"  target < 60 s: {'met' if elapsed < 60 else 'MISSED'}")
    print(
        f"  reliable {summary['reliable_share']}, significant {summary['significant_share']}, "
        f"mean stability {summary['mean_stability']}"
    )
    del levels


def bench_model_passes(n_images: int, options: PipelineOptions) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = torchvision.models.resnet18().eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n_images)]

    def read(rows: Sequence[int]) -> list[Image.Image]:
        return [images[i] for i in rows]

    device = torch.device("cpu")
    layers = layer_infos()
    with torch.inference_mode():  # warm-up: first-call allocations are not the baseline's cost
        model(hooks.preprocess(read(range(min(8, n_images)))))
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n_images, options.batch_size):
            model(hooks.preprocess(read(range(s, min(s + options.batch_size, n_images)))))
    plain = time.perf_counter() - start
    start = time.perf_counter()
    activity = stochastic_active_sets(
        model,
        layers,
        ModelInputs(read, device),
        range(n_images),
        options.top_fraction,
        options.ranking,
        options.mc_samples,
        options.seed,
        device,
        options.batch_size,
    )
    mc = time.perf_counter() - start
    # clusters of 8 images at level 1, 4 clusters on top; groups as the stage would find them
    labels = np.arange(n_images) // 8
    partitions = np.stack([labels, labels * 4 // (labels.max() + 1)], axis=1)
    levels = build_groups(partitions, activity.passes[0], options.min_support)
    clusters = {f"L{lv + 1}-{k}": {} for lv, level in enumerate(levels) for k in range(level.sizes.shape[0])}
    inputs = ModelInputs(read, device)
    inputs(range(n_images))  # decoded once, as in the stage; the baseline above decodes too
    timings, documents = {}, {}
    variants = (
        ("whole passes, every set", False, False),
        ("from the first read layer, every set", True, False),
        ("from the first read layer", True, True),
    )
    for name, from_read_layer, sequential in variants:
        ablated = abl.AblatedModel(model, layers, from_read_layer)
        runs = {f"L{lv + 1}-{k}": {} for lv, level in enumerate(levels) for k in range(level.sizes.shape[0])}
        start = time.perf_counter()
        _causal_checks(runs, partitions, levels, layers, options, ablated, inputs, sequential)
        timings[name] = time.perf_counter() - start
        documents[name] = runs
        ablated.close()
    clusters = documents["from the first read layer"]
    causal = timings["from the first read layer"]
    same = _same_decisions(documents["whole passes, every set"], clusters)
    every = timings["from the first read layer, every set"]
    ablated = abl.AblatedModel(model, layers)
    start = time.perf_counter()
    # the curve on half of the images, its selectivity counted on the other half; the first
    # dropout pass's active sets stand in for the activations that rank the least active
    rows = np.arange(n_images)
    mask = activity.passes[0]
    pruning_report(
        ablated,
        inputs,
        rows[rows % 2 == 1],
        rows[rows % 2 == 0],
        mask,
        partitions,
        [level.members for level in levels],
        mask.astype(np.float32),
        options.pruning_thresholds,
        options.alpha,
        layers,
        options.pruning_random_sets,
        options.seed,
        options.batch_size,
    )
    pruning = time.perf_counter() - start
    ablated.close()
    checked = sum(1 for c in clusters.values() if c.get("causal"))
    print(
        f"model passes: ResNet18 (random weights), {n_images} images of 64x64 on CPU, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  one plain forward pass (baseline): {plain:.1f} s")
    print(f"  {activity.method} x{options.mc_samples}: {mc:.1f} s = {mc / plain:.1f}x")
    print(
        f"  causal checks ({checked} clusters, {options.ablation_random_sets} random sets, "
        f"<= {options.ablation_max_images} images each): {causal:.1f} s = {causal / plain:.1f}x; "
        f"running every set {every:.1f} s ({every / causal:.2f}x), and with whole passes too "
        f"{timings['whole passes, every set']:.1f} s "
        f"({timings['whole passes, every set'] / causal:.2f}x); same decisions: {same}"
    )
    points = len(curve_thresholds(options.pruning_thresholds, options.alpha))
    print(
        f"  pruning curve ({points} points, {options.pruning_random_sets} random sets, on "
        f"{n_images // 2} held-out images: at most "
        f"{pruning_cost(len(layers), points, options.pruning_random_sets)} variants an image): "
        f"{pruning:.1f} s = {pruning / plain:.1f}x"
    )


def _same_decisions(a: dict[str, dict], b: dict[str, dict]) -> bool:
    """Both runs reach the same decisions (ablation and keep-only), with the same p-value
    wherever it is significant (early stopping changes only p-values above alpha)."""
    for key, doc in a.items():
        x, y = doc.get("causal"), b[key].get("causal")
        if (x is None) != (y is None):
            return False
        if x is None:
            continue
        for u, v in ((x, y), (x["keep_only"], y["keep_only"])):
            if u["significant"] != v["significant"] or (u["significant"] and u["p_value"] != v["p_value"]):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25_000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--model-images", type=int, default=200)
    parser.add_argument("--mc-samples", type=int, default=PipelineOptions().mc_samples)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-statistics", action="store_true")
    args = parser.parse_args()
    if not args.skip_statistics:
        bench_statistics(args.images, args.resamples)
    if not args.skip_model:
        bench_model_passes(args.model_images, PipelineOptions(mc_samples=args.mc_samples))


if __name__ == "__main__":
    main()
