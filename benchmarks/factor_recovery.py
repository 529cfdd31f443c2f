"""Do the concept groups of a trained model recover its factors, and does zeroing a factor's
group hurt that factor's images more than the others? (issue 23, "a trained model to validate
on"; the model and images are benchmarks/factor_world.py's.)

For each value of each factor (e.g. colour = red), the images that have it are a true concept:

- its *true group* is what the product's rule gives those images (neurons active in at least
  `min_support` of them, `neuron_core.groups.group_on`);
- its *found concept* is the FINCH cluster, at any level, whose images overlap its images most
  (Jaccard of the image sets), and the found group that cluster's group;
- recovery is the Jaccard of the image sets and of the found group with the true group;
- ablation zeroes the found group (and, apart, the true group) on every image and compares the
  drop of the true class's probability on the value's images with the drop on the rest (a
  probability, not top-1 accuracy: a planted detector zeroed leaves its class on top at a lower
  probability). Shape and colour decide the class, so their groups should hurt their own images
  more; texture and background do not, so theirs need not.

This is not a test (no p-value): it reads what the power column's significance means on
concepts nobody planted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from neuron_core.groups import LevelGroups, group_on
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty.ablation import AblatedModel, masked_logits
from services.uncertainty.model_inputs import ModelInputs


@dataclass(frozen=True)
class ValueRecovery:
    factor: str
    value: str
    images: int
    cluster_jaccard: float  # found cluster's images against the value's images
    group_jaccard: float | None  # found group against the true group; None: both empty
    found_neurons: int
    true_neurons: int
    own_drop: float | None  # true-class probability drop on the value's images, found group zeroed
    other_drop: float | None  # the same on the other images
    true_own_drop: float | None  # the same two with the true group zeroed
    true_other_drop: float | None


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def best_cluster(partitions: np.ndarray, rows: np.ndarray) -> tuple[int, int, float]:
    """(level, cluster, image Jaccard) of the cluster whose images overlap `rows` (bool) most."""
    best = (0, 0, -1.0)
    for level in range(partitions.shape[1]):
        for cluster in np.unique(partitions[:, level]):
            score = _jaccard(partitions[:, level] == cluster, rows)
            if score > best[2]:
                best = (level, int(cluster), score)
    return best


def factor_recovery(
    module: torch.nn.Module,
    prep: Any,
    layers: Sequence[LayerInfo],
    images: Sequence[Image.Image],
    values: dict[str, Sequence[str]],
    labels: np.ndarray,
    partitions: np.ndarray,
    mask: np.ndarray,
    levels: Sequence[LevelGroups],
    min_support: float,
    batch_size: int = 64,
) -> list[ValueRecovery]:
    """One `ValueRecovery` per value of each factor in `values` (factor -> a value per image)."""
    inputs = ModelInputs(lambda rows: [images[i] for i in rows], torch.device("cpu"), prep=prep)
    batch = inputs(list(range(len(images))))
    model = AblatedModel(module, layers)
    try:
        starts = model.starts(batch)
        allowed = np.ones(mask.shape[1], dtype=bool)
        found: list[tuple[str, str, np.ndarray, int, int, float, np.ndarray]] = []
        for factor, per_image in values.items():
            column = np.asarray(per_image)
            for value in sorted(set(per_image)):
                rows = column == value
                true = group_on(partitions, mask, np.flatnonzero(rows), 0, min_support, "direct", allowed)
                level, cluster, image_jaccard = best_cluster(partitions, rows)
                found.append((factor, value, rows, level, cluster, image_jaccard, true))
        # one pass for all: the unablated model (row 0), each found group zeroed, each true group
        keeps = np.ones((2 * len(found) + 1, mask.shape[1]), dtype=bool)
        for i, (_, _, _, level, cluster, _, true) in enumerate(found):
            keeps[i + 1] = ~levels[level].members[cluster]
            keeps[len(found) + i + 1] = ~true
        n = len(images)
        image_index = np.tile(np.arange(n), keeps.shape[0])
        variant_index = np.repeat(np.arange(keeps.shape[0]), n)
        logits = masked_logits(model, starts, keeps, image_index, variant_index, batch_size)
    finally:
        model.close()
    probability = logits.softmax(dim=1).gather(
        1, torch.from_numpy(np.tile(labels, keeps.shape[0])).view(-1, 1)
    )
    true_class = probability.view(keeps.shape[0], n).numpy().astype(np.float64)
    results = []
    for i, (factor, value, rows, level, cluster, image_jaccard, true) in enumerate(found):
        group = levels[level].members[cluster]
        drop = true_class[0] - true_class[i + 1]
        true_drop = true_class[0] - true_class[len(found) + i + 1]
        results.append(
            ValueRecovery(
                factor=factor,
                value=value,
                images=int(rows.sum()),
                cluster_jaccard=round(image_jaccard, 3),
                group_jaccard=round(_jaccard(group, true), 3) if (group | true).any() else None,
                found_neurons=int(group.sum()),
                true_neurons=int(true.sum()),
                own_drop=round(float(drop[rows].mean()), 3) if group.any() else None,
                other_drop=round(float(drop[~rows].mean()), 3) if group.any() else None,
                true_own_drop=round(float(true_drop[rows].mean()), 3) if true.any() else None,
                true_other_drop=round(float(true_drop[~rows].mean()), 3) if true.any() else None,
            )
        )
    return results


def summary(results: Sequence[ValueRecovery]) -> list[str]:
    """One line per factor: median Jaccards, and for the found and the true groups, how many
    values' groups hurt their own images more than the others, with the mean drops."""
    lines = [
        "| factor | values | median image Jaccard | median group Jaccard | found group: own > other "
        "(mean own, other drop) | true group: own > other (mean own, other drop) |",
        "|---|---|---|---|---|---|",
    ]

    def hurt(pairs: Sequence[tuple[float | None, float | None]]) -> str:
        done = [(own, other) for own, other in pairs if own is not None and other is not None]
        if not done:
            return "no group"
        wins = sum(own > other for own, other in done)
        own = float(np.mean([own for own, _ in done]))
        other = float(np.mean([other for _, other in done]))
        return f"{wins} of {len(done)} ({own:.3f}, {other:.3f})"

    def median(values: Sequence[float | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{np.median(known):.2f}" if known else "both empty"

    for factor in dict.fromkeys(r.factor for r in results):
        rows = [r for r in results if r.factor == factor]
        lines.append(
            f"| {factor} | {len(rows)} | {np.median([r.cluster_jaccard for r in rows]):.2f} | "
            f"{median([r.group_jaccard for r in rows])} | "
            f"{hurt([(r.own_drop, r.other_drop) for r in rows])} | "
            f"{hurt([(r.true_own_drop, r.true_other_drop) for r in rows])} |"
        )
    return lines
