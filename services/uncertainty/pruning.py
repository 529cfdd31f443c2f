"""Significance pruning (Jo, Jun & Park 2020) and its curve over strictness.

At each q threshold, every neuron that is in no membership selective at that q (any cluster, any
level) is zeroed on the whole collection; the model's outputs are compared with the unpruned
model's (top-1 agreement, mean |logit change|, top-logit drop) and, for images with a class
label, top-1 accuracy. Beside each point, random prunings of as many neurons per layer drawn
uniformly from the whole layer, so the curve shows whether the statistics pick neurons that
matter more than chance does, and the seed's claim (pruning by significance can raise accuracy)
can be checked on a user's own labelled images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from neuron_core.layers import LayerInfo
from services.uncertainty import ablation as abl
from services.uncertainty.model_uncertainty import InputSource


def kept_at(q_values: Sequence[np.ndarray], members: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """Neurons in some membership (any level) whose selectivity q-value is at most `threshold`."""
    kept = np.zeros(members[0].shape[1], dtype=bool)
    for q, m in zip(q_values, members, strict=True):
        kept |= (m & (q <= threshold)).any(axis=0)
    return kept


def change(base: torch.Tensor, changed: torch.Tensor, labels: np.ndarray | None) -> dict[str, Any]:
    """abl.output_change, with top-1 accuracy over the labelled images (label >= 0)."""
    result: dict[str, Any] = abl.output_change(base, changed)
    result["top1_accuracy"] = accuracy(changed, labels)
    return result


def accuracy(logits: torch.Tensor, labels: np.ndarray | None) -> float | None:
    if labels is None or not (labels >= 0).any():
        return None
    known = labels >= 0
    predicted = logits.argmax(dim=1).numpy()[known]
    return round(float(np.mean(predicted == labels[known])), 6)


def pruning_curve(
    ablated: abl.AblatedModel,
    inputs: InputSource,
    n_images: int,
    prunes: Sequence[tuple[float, np.ndarray]],
    layers: Sequence[LayerInfo],
    random_sets: int,
    seed: int,
    batch_size: int,
    labels: np.ndarray | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """The unpruned logits and one curve point per (q threshold, neurons to prune)."""
    n_neurons = sum(layer.channels for layer in layers)
    variants = [np.ones(n_neurons, dtype=bool)]  # row 0: the unpruned model
    rows_of: list[tuple[int, list[int]]] = []
    for i, (_, prune) in enumerate(prunes):
        randoms = abl.matched_random_sets(prune, layers, random_sets, np.random.default_rng([seed, 0, i]))
        first = len(variants)
        variants += [~prune, *~randoms]
        rows_of.append((first, list(range(first + 1, len(variants)))))
    keeps = np.vstack(variants)
    n_variants = keeps.shape[0]
    outputs: list[list[torch.Tensor]] = [[] for _ in range(n_variants)]
    for start in range(0, n_images, batch_size):
        rows = list(range(start, min(start + batch_size, n_images)))
        m = len(rows)
        logits = abl.masked_logits(
            ablated,
            ablated.starts(inputs(rows)),
            keeps,
            np.tile(np.arange(m), n_variants),
            np.repeat(np.arange(n_variants), m),
            batch_size,
        )
        for v in range(n_variants):
            outputs[v].append(logits[v * m : (v + 1) * m])
    logits_of = [torch.cat(o) for o in outputs]
    base = logits_of[0]
    curve = []
    for (threshold, prune), (pruned_row, random_rows) in zip(prunes, rows_of, strict=True):
        curve.append(
            {
                "q_threshold": threshold,
                "neurons_pruned": int(prune.sum()),
                "share_pruned": round(float(prune.mean()), 6),
                "pruned": change(base, logits_of[pruned_row], labels) if prune.any() else None,
                "random": [change(base, logits_of[r], labels) for r in random_rows] if prune.any() else [],
            }
        )
    return base, curve


def pruning_report(
    ablated: abl.AblatedModel,
    inputs: InputSource,
    n_images: int,
    q_values: Sequence[np.ndarray],
    members: Sequence[np.ndarray],
    thresholds: Sequence[float],
    alpha: float,
    layers: Sequence[LayerInfo],
    random_sets: int,
    seed: int,
    batch_size: int,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """The job's `pruning`: the point at q <= alpha up front, the whole curve beside it."""
    points = sorted({*thresholds, alpha})
    prunes = [(q, ~kept_at(q_values, members, q)) for q in points]
    base, curve = pruning_curve(
        ablated, inputs, n_images, prunes, layers, random_sets, seed, batch_size, labels
    )
    at_alpha = curve[points.index(alpha)]
    return {
        "neurons_pruned": at_alpha["neurons_pruned"],
        "share_pruned": at_alpha["share_pruned"],
        "images": n_images,
        "pruned": at_alpha["pruned"],
        "random": at_alpha["random"],
        "labelled_images": int((labels >= 0).sum()) if labels is not None else 0,
        "unpruned_top1_accuracy": accuracy(base, labels),
        "curve": curve,
    }
