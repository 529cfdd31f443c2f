"""Benchmark of what the uncertainty statistics claim, against ground truth.

1. Coverage of the support interval at 95%: simulated (seeded) for Wilson and Clopper-Pearson on
   a grid of n and p, the exact worst case over n = 8..128, p in [0.05, 0.95], and how often
   "reliable" (lower bound >= min_support 0.5) fires when the true support is exactly 0.5.
2. Planted ground truth: a model with known concept detectors, generic (always-on) neurons and
   random neurons (tests.tiny_models.planted_net) through the whole uncertainty stage: recovery
   of the planted memberships, false memberships, generic memberships flagged and not selective,
   the specificity test on the planted concepts, and the pruning curve against its baselines.

Each test's false-positive rate under the product's own nulls is benchmarks/null_calibration.py's.

    python benchmarks/uncertainty_statistics.py [--draws 20000]

Runs in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuron_atlas_client.options import PipelineOptions  # noqa: E402
from neuron_core.active_sets import active_mask  # noqa: E402
from neuron_core.groups import build_groups  # noqa: E402
from neuron_core.hooks import ActivationReader, preprocess  # noqa: E402
from services.uncertainty.stage import JobArrays, ModelSide, compute_uncertainty  # noqa: E402
from services.uncertainty.stats import proportion_interval  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    PLANTED_CONCEPTS,
    PLANTED_GENERIC,
    PLANTED_NEURONS,
    PLANTED_TOP_FRACTION,
    planted_detectors,
    planted_group,
    planted_images,
    planted_layers,
    planted_net,
)

LAYERS = planted_layers()
N_NEURONS = PLANTED_NEURONS
METHODS = ("wilson", "clopper_pearson")


def exact_coverage(method: str, n: int, p: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    k = np.arange(n + 1)
    lo, hi = proportion_interval(k, np.full(n + 1, n), alpha, method)  # type: ignore[arg-type]
    covers = (lo[:, None] <= p[None, :]) & (p[None, :] <= hi[:, None])
    return np.asarray((stats.binom.pmf(k[:, None], n, p[None, :]) * covers).sum(axis=0))


def reliable_at_half(method: str, n: int, min_support: float = 0.5, alpha: float = 0.05) -> float:
    """P(lower bound >= min_support) when the true support is exactly min_support."""
    k = np.arange(n + 1)
    lo, _ = proportion_interval(k, np.full(n + 1, n), alpha, method)  # type: ignore[arg-type]
    return float(stats.binom.pmf(k, n, min_support)[lo >= min_support].sum())


def coverage(draws: int) -> None:
    rng = np.random.default_rng(0)
    ns, ps = (8, 12, 16, 24, 32, 64, 128), (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    print(f"1. Coverage of the nominal 95% interval, {draws:,} simulated clusters per cell")
    for method in METHODS:
        print(f"  {method}")
        print("    n \\ p " + "".join(f"{p:>7}" for p in ps))
        for n in ns:
            cells = []
            for p in ps:
                k = rng.binomial(n, p, size=draws)
                lo, hi = proportion_interval(k, np.full(draws, n), 0.05, method)  # type: ignore[arg-type]
                cells.append(np.mean((lo <= p) & (p <= hi)))
            print(f"    {n:>5}  " + "".join(f"{c:7.3f}" for c in cells))
    grid = np.linspace(0.05, 0.95, 181)
    print("  exact worst case over n = 8..128, p in [0.05, 0.95] (nominal 0.95, required >= 0.94):")
    for method in METHODS:
        worst = min((exact_coverage(method, n, grid).min(), n) for n in range(8, 129))
        fires = max((reliable_at_half(method, n), n) for n in range(8, 129))
        print(
            f"    {method:16} min coverage {worst[0]:.3f} (n = {worst[1]}); "
            f"'reliable' at true support 0.5: up to {fires[0]:.3f} (n = {fires[1]}; nominal 0.025)"
        )
    wilson16 = exact_coverage("wilson", 16, np.array([0.5]))[0]
    print(f"    wilson at n = 16, p = 0.5: {wilson16:.3f}")


def planted_job(per_concept: int, random_sets: int) -> dict[str, Any]:
    options = PipelineOptions(
        top_fraction=PLANTED_TOP_FRACTION,
        bootstrap_resamples=100,
        mc_samples=4,
        tta_samples=2,
        ablation_random_sets=random_sets,
        ablation_max_images=10,
        pruning_random_sets=10,
        pruning_thresholds=(1e-4, 0.05, 1.0),
        batch_size=512,
        uncertainty_budget="full",
    )
    images, concepts = planted_images(per_concept)
    model = planted_net()
    reader = ActivationReader(model, [layer.name for layer in LAYERS])
    try:
        pooled = reader.read(preprocess(images)).numpy()
    finally:
        reader.close()
    mask = active_mask(pooled, LAYERS, options.top_fraction, options.ranking)
    partitions = np.stack([concepts, concepts // 2], axis=1)
    levels = build_groups(partitions, mask, options.min_support)
    start = time.perf_counter()
    arrays = JobArrays(partitions, mask, pooled, levels, LAYERS, labels=concepts)
    side = ModelSide(model, lambda rows: [images[i] for i in rows], torch.device("cpu"))
    document = compute_uncertainty(arrays, options, side).document()
    return {"document": document, "seconds": time.perf_counter() - start, "images": len(images)}


def planted(per_concept: int, random_sets: int) -> None:
    job = planted_job(per_concept, random_sets)
    document = job["document"]
    print(
        f"\n2. Planted ground truth: {PLANTED_CONCEPTS} concepts x {per_concept} images, "
        f"{N_NEURONS} neurons ({len(PLANTED_GENERIC)} generic, {PLANTED_CONCEPTS * 6} detectors, the rest "
        f"random); stage in {job['seconds']:.0f} s"
    )
    planted_total = recovered = selective = false = false_selective = 0
    generic_flagged = generic_selective = generic_above_chance = generic_total = 0
    for concept in range(PLANTED_CONCEPTS):
        members = document["clusters"][f"L1-{concept}"]["members"]
        rows = {n: j for j, n in enumerate(members["neuron"])}
        planted_total += len(planted_group(concept))
        recovered += len(planted_group(concept) & set(rows))
        selective += sum(1 for n in planted_detectors(concept) if n in rows and members["selective"][rows[n]])
        extra = set(rows) - planted_group(concept)
        false += len(extra)
        false_selective += sum(1 for n in extra if members["selective"][rows[n]])
        for n in PLANTED_GENERIC:
            if n in rows:
                generic_total += 1
                generic_flagged += members["generic"][rows[n]]
                generic_selective += members["selective"][rows[n]]
                generic_above_chance += members["above_chance"][rows[n]]
    detectors = PLANTED_CONCEPTS * 6
    print(f"  planted level-1 memberships recovered by the group rule: {recovered} of {planted_total}")
    print(f"  planted detector memberships selective (q <= 0.05): {selective} of {detectors}")
    print(f"  false memberships (random neurons in a group): {false}, of them selective: {false_selective}")
    print(
        f"  generic memberships: {generic_total}; flagged generic {generic_flagged}, selective "
        f"{generic_selective}, above chance (the old test) {generic_above_chance}"
    )
    for concept in range(PLANTED_CONCEPTS):
        cluster = document["clusters"][f"L1-{concept}"]
        tested, importance = cluster["specificity"]["result"], cluster["importance"]["result"]
        print(
            f"  concept {concept}: specificity effect {tested['effect']:.2f} (held-out drop "
            f"{tested['test_drop']:.2f}, reference {tested['reference_drop']:.2f}, equally active "
            f"neurons {tested['equally_active_drop']:.2f}), p {tested['p_value']:.4g}, q "
            f"{tested['q_value']:.4g}; keep-only p {tested['keep_only']['p_value']:.4g}; importance p "
            f"{importance['p_value']:.4g}"
        )
    model = document["method"]["model_uncertainty"]
    entropy = [document["clusters"][f"L1-{c}"]["model_uncertainty"] for c in range(PLANTED_CONCEPTS)]
    print(
        f"  predictive entropy per concept (total = expected entropy + mutual information, nats; "
        f"{model['method']}, read as {model['interpretation']}): "
        + "; ".join(
            f"{e['total']:.3f} = {e['expected_entropy']:.3f} + {e['mutual_information']:.3f}" for e in entropy
        )
    )
    pruning = document["pruning"]
    print(
        f"  pruning curve ({pruning['heldout_images']} held-out images, selectivity counted on "
        f"{pruning['selection_images']}; unpruned top-1 accuracy {pruning['unpruned_top1_accuracy']}; "
        f"random: mean [95% percentile interval] of {pruning['random_sets']} sets):"
    )
    print("    q <=     pruned                share   significance  random               least active")
    for point in pruning["curve"]:
        for name, outcome in [("all layers", point), *((x["layer"], x) for x in point["layers"])]:
            where = f"{point['q_threshold']:<8g} {name:<20}  {outcome['share_pruned']:.3f}"
            if outcome["significance"] is None:
                print(f"    {where}   (nothing pruned)")
                continue
            random = outcome["random"]
            spread = (
                f"{random['mean']['top1_accuracy']:.3f} [{random['lower']['top1_accuracy']:.3f}, "
                f"{random['upper']['top1_accuracy']:.3f}]"
                if random
                else "-" * 20
            )
            print(
                f"    {where}   {outcome['significance']['top1_accuracy']:.3f}         {spread}  "
                f"{outcome['least_active']['top1_accuracy']:.3f}"
            )
    print(f"  verdict: {pruning['verdict']['sentence']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--per-concept", type=int, default=20)
    parser.add_argument("--planted-random-sets", type=int, default=199)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    coverage(args.draws)
    planted(args.per_concept, args.planted_random_sets)


if __name__ == "__main__":
    main()
