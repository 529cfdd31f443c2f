"""Labelling benchmark: what concurrency, the response cache and caption sampling buy.

A synthetic collection (template captions, real sentence embeddings, real FINCH partitions)
is labelled through the official client against the test suite's OpenAI-compatible server on
127.0.0.1, which answers after a fixed latency. Every ratio is against a baseline measured in
the same run: concurrency 1, a cold cache, and prompts that send every caption. Times are those
of writing the labels; the quality score's (embedding every label) is reported beside them.

    PYTHONPATH=. python benchmarks/labelling.py --images 2000 --latency 0.05
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from neuron_atlas_client.contracts.labels import ClusterLabel
from neuron_atlas_client.options import PipelineOptions
from services.labelling.quality import label_quality
from services.labelling.settings import LabelSettings
from services.labelling.stage import label_clusters, label_vectors, labelling_summary
from shared.models.sentence_embedder import Embedder
from shared.pipeline.clustering import finch_partitions
from shared.pipeline.tree import build_tree
from shared.storage import artifacts
from shared.storage.stores import LocalStore, get_json, get_npy, put_json, put_npy
from tests.services.labelling.fake_llm import FakeLLM

SUBJECTS = ["dog", "cat", "horse", "red car", "bus", "sailing boat", "bicycle", "bird", "cow", "train"]
PLACES = ["on the grass", "in the snow", "on a city street", "near the beach", "in a forest", "indoors"]
DETAILS = ["at sunset", "in the rain", "in bright daylight", "at night", "with people nearby", ""]
LOOKS = ["small", "large", "old", "shiny", "muddy", "young"]


def synthetic_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(LOOKS, SUBJECTS, PLACES, DETAILS))
    picks = rng.integers(0, len(combos), n)
    return [" ".join(f"a {look} {s} {p} {d}".split()) for look, s, p, d in (combos[i] for i in picks)]


def subject_partitions(captions: list[str]) -> np.ndarray:
    """Large level-1 clusters: one per subject; level 2: animals and vehicles."""
    subject = [next(i for i, s in enumerate(SUBJECTS) if f" {s} " in c) for c in captions]
    vehicle = {"red car", "bus", "sailing boat", "bicycle", "train"}
    return np.array([[i, int(SUBJECTS[i] in vehicle)] for i in subject], dtype=np.int32)


def make_job(root: Path, captions: list[str], embedder: Embedder) -> tuple[LocalStore, np.ndarray]:
    store = LocalStore(root)
    vectors = embedder.embed(captions)
    put_json(store, artifacts.SPEC, {"options": PipelineOptions().model_dump(mode="json")})
    put_npy(store, artifacts.EMBEDDINGS, vectors)
    partitions = finch_partitions(vectors)
    put_npy(store, artifacts.PARTITIONS, partitions)
    return store, partitions


def timed_label(
    store: LocalStore, captions: list[str], embedder: Embedder, settings: LabelSettings
) -> tuple[float, dict[str, Any]]:
    """(seconds spent writing labels, summary): the run's time less the time its quality
    scoring takes (embedding every label on CPU), measured again on the same labels."""
    start = time.perf_counter()
    label_clusters(store, captions, embedder, settings)
    total = time.perf_counter() - start
    labels = {cid: ClusterLabel(**fields) for cid, fields in get_json(store, artifacts.LABELS).items()}
    start = time.perf_counter()
    embeddings = get_npy(store, artifacts.EMBEDDINGS)
    tree = build_tree(get_npy(store, artifacts.PARTITIONS))
    label_quality(tree, label_vectors(labels, captions, embeddings, embedder), embeddings)
    summary = labelling_summary(store).document()
    summary["quality_seconds"] = round(time.perf_counter() - start, 3)
    return max(total - summary["quality_seconds"], 1e-3), summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per answer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    embedder = Embedder()
    embedder.load()
    captions = synthetic_captions(args.images, args.seed)
    server = FakeLLM().start()
    server.delay = args.latency
    results: dict[str, Any] = {"images": args.images, "latency_s": args.latency}
    with tempfile.TemporaryDirectory() as tmp:
        store, partitions = make_job(Path(tmp) / "job", captions, embedder)
        tree = build_tree(partitions)
        results["clusters_per_level"] = [len(level) for level in tree]
        results["largest_level1_cluster"] = max(len(n.images) for n in tree[0])

        def settings(**changes: Any) -> LabelSettings:
            base = {"base_url": server.url, "model": "bench", "timeout": 30.0, "cache": False}
            return LabelSettings(**{**base, **changes})

        offline_s, offline = timed_label(store, captions, embedder, LabelSettings(cache=False))
        results["offline"] = {
            "seconds": round(offline_s, 3),
            "quality_seconds": offline["quality_seconds"],
            "quality_mean": offline["quality"]["mean"],
        }

        runs = {}
        for concurrency in (1, 4, 8):
            seconds, summary = timed_label(store, captions, embedder, settings(concurrency=concurrency))
            runs[concurrency] = seconds
            results["_finch_quality"] = summary["quality"]["mean"]
            results[f"llm_concurrency_{concurrency}"] = {
                "seconds": round(seconds, 3),
                "requests": summary["accounting"]["requests"],
                "quality_seconds": summary["quality_seconds"],
                "speedup_vs_concurrency_1": round(runs[1] / seconds, 2),
            }

        cache = {"cache": True, "cache_dir": Path(tmp) / "cache", "concurrency": 4}
        cold_s, cold = timed_label(store, captions, embedder, settings(**cache))
        sent = server.requests
        warm_s, warm = timed_label(store, captions, embedder, settings(**cache))
        results["cache"] = {
            "cold_seconds": round(cold_s, 3),
            "warm_seconds": round(warm_s, 3),
            "speedup": round(cold_s / warm_s, 2),
            "quality_seconds": warm["quality_seconds"],
            "warm_requests": server.requests - sent,
            "warm_cache_hits": warm["accounting"]["cache_hits"],
            "cold_prompt_tokens": cold["accounting"]["prompt_tokens"],
            "warm_prompt_tokens": warm["accounting"]["prompt_tokens"],
        }

        # Large clusters: what the token budget saves against sending every caption.
        put_npy(store, artifacts.PARTITIONS, subject_partitions(captions))
        everything = settings(concurrency=4, caption_token_budget=10**9)
        _, all_captions = timed_label(store, captions, embedder, everything)
        _, sampled = timed_label(store, captions, embedder, settings(concurrency=4))
        results["caption_sampling"] = {
            "level1_clusters": 10,
            "captions_per_cluster": args.images // 10,
            "prompt_tokens_all_captions": all_captions["accounting"]["prompt_tokens"],
            "prompt_tokens_sampled": sampled["accounting"]["prompt_tokens"],
            "ratio": round(
                sampled["accounting"]["prompt_tokens"] / all_captions["accounting"]["prompt_tokens"], 3
            ),
            "quality_mean_all_captions": all_captions["quality"]["mean"],
            "quality_mean_sampled": sampled["quality"]["mean"],
        }
        results["label_quality_mean_llm_on_finch"] = results.pop("_finch_quality")
    server.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
