"""Benchmarks of the core pipeline (issue: the core pipeline, embedded).

    python benchmarks/core.py            # everything, CPU (and GPU where torch sees one)
    python benchmarks/core.py --only activations,groups

Each speed is reported next to a baseline measured in the same run:
- activations: the activation stage (hooks, pooling, top-k active sets) against a bare forward
  pass of the same model over the same preprocessed batches; and both with preprocessing.
- groups: groups, differences, tree and groups.json document for 25,000 images x 960 neurons
  (all ResNet18 stage channels) x 6 levels, against one sparse product of the same size.
- finch: FINCH on 25,000 x 384 unit embeddings, time and peak memory (separate process).
- caption / embed: BLIP-base architecture (built from its config: the weights are not reachable
  here, and speed does not depend on their values; random weights run every caption to the
  token bound, so this is the worst case) and the bundled all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_images(n: int, size: int = 256) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def bench_activations(device: str, n_images: int, batch: int) -> dict[str, float]:
    import torch
    import torchvision

    from neuron_atlas_client.options import PipelineOptions
    from neuron_core import active_sets, hooks
    from neuron_core import layers as layer_names
    from services.activation.stage import shard_activations

    dev = torch.device(device)
    model = torchvision.models.resnet18().eval().to(dev)
    images = synthetic_images(n_images)
    tensors = [hooks.preprocess(images[i : i + batch]) for i in range(0, n_images, batch)]
    options = PipelineOptions(batch_size=batch)

    @torch.inference_mode()
    def bare_forward() -> None:
        for x in tensors:
            model(x.to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def bare_with_preprocess() -> None:
        for i in range(0, n_images, batch):
            model(hooks.preprocess(images[i : i + batch]).to(dev))
        if dev.type == "cuda":
            torch.cuda.synchronize()

    reader = hooks.ActivationReader(model, layer_names.resolve_layers(model, None))
    layers = reader.layer_infos(dev)

    def stage_on_tensors() -> None:
        for x in tensors:
            pooled = reader.read(x.to(dev)).cpu().numpy()
            active_sets.active_mask(pooled, layers, options.top_fraction, options.ranking)

    def stage() -> None:
        shard_activations(images, reader, layers, options, dev)

    # interleave so drifts of the machine hit both sides alike
    rounds = {"bare": [], "stage_tensors": [], "bare_pre": [], "stage": []}
    for _ in range(3):
        rounds["bare"].append(timed(bare_forward, 1))
        rounds["stage_tensors"].append(timed(stage_on_tensors, 1))
        rounds["bare_pre"].append(timed(bare_with_preprocess, 1))
        rounds["stage"].append(timed(stage, 1))
    t = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "images": n_images,
        "batch": batch,
        "bare_forward_img_s": n_images / t["bare"],
        "stage_img_s": n_images / t["stage_tensors"],
        "ratio_stage_over_bare": t["bare"] / t["stage_tensors"],
        "bare_with_preprocess_img_s": n_images / t["bare_pre"],
        "stage_with_preprocess_img_s": n_images / t["stage"],
        "ratio_with_preprocess": t["bare_pre"] / t["stage"],
    }


def nested_partitions(n: int, levels: int, seed: int = 0) -> np.ndarray:
    """FINCH-like nesting: ~n/8 clusters at level 1, each level merging ~3-4 clusters."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n // 8, n)
    columns = [labels]
    k = n // 8
    for _ in range(levels - 1):
        k = max(1, k // 3)
        columns.append(rng.integers(0, k, int(columns[-1].max()) + 1)[columns[-1]])
    from shared.pipeline.clustering import canonical_labels

    return np.stack([canonical_labels(c) for c in columns], axis=1)


def bench_groups(n: int = 25_000, levels: int = 6) -> dict[str, float]:
    import scipy.sparse as sp

    from neuron_core import active_sets
    from neuron_core import layers as layer_names
    from neuron_core.active_sets import ActiveSets
    from neuron_core.groups import active_matrix, build_groups, groups_document, one_hot
    from shared.pipeline.tree import build_tree

    infos, offset = [], 0
    for name, channels in [("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)]:
        infos.append(layer_names.LayerInfo(name, channels, offset))
        offset += channels
    rng = np.random.default_rng(1)
    mask = active_sets.active_mask(rng.random((n, offset), dtype=np.float32), infos, 0.1, "per_layer")
    partitions = nested_partitions(n, levels)
    active = ActiveSets([str(i) for i in range(n)], mask, infos, "random")

    def groups_and_hierarchy() -> None:
        built = build_groups(partitions, mask, 0.5, "intersect")
        build_tree(partitions)
        groups_document(built, active)

    def one_product() -> None:
        (one_hot(partitions[:, 0]) @ active_matrix(mask)).toarray()

    seconds = timed(groups_and_hierarchy, 3)
    baseline = timed(one_product, 3)
    return {
        "images": n,
        "neurons": offset,
        "levels": levels,
        "clusters_level1": int(partitions[:, 0].max()) + 1,
        "seconds": seconds,
        "baseline_one_sparse_product_s": baseline,
        "ratio_to_baseline": seconds / baseline,
        "sparse_nnz": int(sp.csr_matrix(mask).nnz),
    }


FINCH_CHILD = """
import resource, sys, time, numpy as np
sys.path.insert(0, {root!r})
from shared.pipeline.clustering import finch_partitions
rng = np.random.default_rng(0)
centres = rng.normal(size=(400, 384))
x = (centres[rng.integers(0, 400, {n})] + rng.normal(size=({n}, 384)) * 0.8).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); p = finch_partitions(x); s = time.perf_counter() - t
t = time.perf_counter(); x @ x[:2000].T; b = time.perf_counter() - t
print({{"seconds": s, "levels": p.shape[1], "clusters": [int(c.max()) + 1 for c in p.T],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "input_rss_gb": base / 1e6, "baseline_one_similarity_block_s": b}})
"""


def bench_finch(n: int = 25_000) -> dict[str, object]:
    code = FINCH_CHILD.format(root=str(Path(__file__).resolve().parents[1]), n=n)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, object] = eval(out.stdout.strip().splitlines()[-1])  # our own child's dict
    result["images"] = n
    return result


def bench_embed(device: str | None, n: int = 2000) -> dict[str, float]:
    from neuron_atlas.sample import CONCEPTS, PHRASES
    from shared.models.sentence_embedder import Embedder

    captions = [
        PHRASES[i % 3].format(c=CONCEPTS[i % 6][1], s=CONCEPTS[i % 6][0], b=f"{CONCEPTS[i % 6][3]} {i}")
        for i in range(n)
    ]
    embedder = Embedder(device=device)
    embedder.load()
    seconds = timed(lambda: embedder.embed(captions, 256), 2)
    return {"captions": n, "captions_per_s": n / seconds}


def bench_caption(device: str, n: int = 16, batch: int = 8) -> dict[str, float]:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    from services.caption.captioning import Captioner, CaptionModel

    dev = torch.device(device)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig()).eval()  # BLIP-base shapes, random weights
    # never stop early: every caption runs to the token bound (the worst case)
    model.text_decoder.generation_config.eos_token_id = None
    model.generation_config.eos_token_id = None

    class Decoder:  # ids -> text without a vocabulary file (none reachable here)
        def __init__(self) -> None:
            self.image = BlipImageProcessor()

        def __call__(self, images: list, return_tensors: str) -> object:
            # as BlipProcessor for captioning: pixels only; BLIP starts each caption itself
            return self.image(images=images, return_tensors=return_tensors)

        def batch_decode(self, tokens: torch.Tensor, skip_special_tokens: bool) -> list[str]:
            return [" ".join(map(str, row.tolist())) for row in tokens]

    captioner = Captioner(
        "blip-base-from-config", dev, loader=lambda *_: CaptionModel(Decoder(), model.to(dev))
    )
    images = synthetic_images(n, 384)
    seconds = timed(lambda: captioner.caption(images, batch, 30), 1)
    return {"images": n, "batch": batch, "max_new_tokens": 30, "images_per_s": n / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="activations,groups,finch,embed,caption")
    parser.add_argument("--activation-images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    wanted = set(args.only.split(","))
    results: dict[str, object] = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}

    def record(name: str, value: object) -> None:  # each result as it comes, in case a later one fails
        results[name] = value
        print(json.dumps({name: value}), file=sys.stderr, flush=True)

    for device in devices:
        if "activations" in wanted:
            record(f"activations_{device}", bench_activations(device, args.activation_images, args.batch))
        if "embed" in wanted:
            record(f"embed_{device}", bench_embed(device))
        if "caption" in wanted:
            record(f"caption_{device}", bench_caption(device, 64 if device == "cuda" else 16))
    if "groups" in wanted:
        record("groups", bench_groups())
    if "finch" in wanted:
        record("finch", bench_finch())
    json.dump(results, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
