"""Significance pruning (Jo, Jun & Park 2020) on held-out images, with baselines that isolate
significance from activity.

At each q threshold, every neuron in no membership selective at that q (any cluster, any level)
is zeroed, and the model's outputs are compared with the unpruned model's (top-1 agreement, mean
|logit change|, top-logit drop; top-1 accuracy on labelled images). Three things keep the curve
honest (issue 23, item 6; issue 29, item 3):

- **Held-out images.** Selectivity is counted on the selection images only and the curve runs on
  the held-out images, so a neuron is not kept because it fired on the very images it is judged on.
- **Two baselines of the same number of neurons per layer.** Uniform random prunings (drawn from
  the whole layer; their mean and a 95% percentile interval show the spread), and the
  least-active neurons (lowest mean activation on the selection images). Significance pruning
  keeps the active neurons, so it beats random pruning with no concept involved; only beating the
  least-active baseline says that significance picks what matters beyond activity.
- **Per layer.** Each layer pruned alone, so a loss can be traced to a layer: on a trained ResNet18
  pruning at q <= 0.05 took top-1 from 0.995 to 0.23, and layer1 alone to 0.195.

The verdict says in one sentence whether pruning by significance loses accuracy (agreement,
without labels) and names the layer that loses most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from neuron_atlas_client.contracts.uncertainty import (
    LayerPruning,
    OutputChange,
    Pruning,
    PruningPoint,
    PruningVerdict,
    RandomPrunings,
)
from neuron_core.groups import active_matrix, one_hot
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty import ablation as abl
from services.uncertainty.model_uncertainty import InputSource
from services.uncertainty.stats import membership_stats

DEFAULT_TOLERANCE = 0.02  # a fall of accuracy (or agreement) by more than this is a loss
PERCENTILES = (2.5, 97.5)  # the random prunings' 95% percentile interval
Measure = Literal["top1_accuracy", "top1_agreement"]


def curve_thresholds(thresholds: Sequence[float], alpha: float) -> list[float]:
    """The q thresholds of the curve: the options' thresholds and alpha, ascending, once each."""
    return sorted({*(float(q) for q in thresholds), float(alpha)})


def pruning_cost(
    n_layers: int, thresholds: int, random_sets: int, layer_thresholds: int | None = None
) -> int:
    """Model variants per held-out image, at most: the unpruned model, and at each of the curve's
    `thresholds` q thresholds (alpha included, `len(curve_thresholds(...))`) significance,
    least-active and `random_sets` random prunings of all layers at once, and at
    `layer_thresholds` of them (None: all) the same of each layer alone (with one layer, that is
    the same variant). Each variant is a pass from the first read layer's output on; identical
    variants (a layer with nothing pruned) run once, so a run may use fewer."""
    per_layer = thresholds if layer_thresholds is None else layer_thresholds
    layers = 0 if n_layers == 1 else n_layers
    return 1 + (thresholds + per_layer * layers) * (random_sets + 2)


def selection_q_values(
    mask: np.ndarray,
    partitions: np.ndarray,
    members: Sequence[np.ndarray],
    selection_rows: np.ndarray,
    alpha: float,
) -> list[np.ndarray]:
    """Per level, every (cluster, neuron)'s selectivity q-value, counted on `selection_rows` only:
    the stage's test (`membership_stats`, hypergeometric against the rest of the collection, BH
    across each cluster's neurons) with each cluster's counts, sizes and the collection's totals
    all over the selection rows. `members` are the groups as given."""
    chosen = mask[selection_rows]
    active = active_matrix(chosen)
    totals = chosen.sum(axis=0)
    n_images = int(chosen.shape[0])
    q_values = []
    for level, level_members in enumerate(members):
        membership = one_hot(partitions[selection_rows, level], level_members.shape[0])
        counts = np.rint((membership @ active).toarray()).astype(np.int64)
        sizes = np.rint(np.asarray(membership.sum(axis=1)).ravel()).astype(np.int64)
        # Only q_value is read: the chance rate and min_support feed other fields of the table.
        stats = membership_stats(
            counts, sizes, level_members, totals / n_images, alpha, 0.5, totals=totals, n_images=n_images
        )
        q_values.append(stats.q_value)
    return q_values


def kept_at(q_values: Sequence[np.ndarray], members: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """Neurons in some membership (any level) whose selectivity q-value is at most `threshold`."""
    kept = np.zeros(members[0].shape[1], dtype=bool)
    for q, m in zip(q_values, members, strict=True):
        kept |= (m & (q <= threshold)).any(axis=0)
    return kept


def least_active(prune: np.ndarray, activity: np.ndarray, layers: Sequence[LayerInfo]) -> np.ndarray:
    """As many neurons in each layer as `prune` holds there, the ones of lowest `activity` (mean
    pooled activation on the selection images); ties go to the lower channel."""
    chosen = np.zeros_like(prune, dtype=bool)
    for layer in layers:
        cols = slice(layer.offset, layer.offset + layer.channels)
        size = int(prune[cols].sum())
        lowest = np.argsort(activity[cols], kind="stable")[:size]
        chosen[layer.offset + lowest] = True
    return chosen


@dataclass(frozen=True)
class Scope:
    """The prunings compared at one q threshold, of all layers (`layer` None) or of one layer."""

    layer: LayerInfo | None
    significance: np.ndarray  # (neurons,) bool: pruned
    random: np.ndarray  # (sets, neurons) bool
    least_active: np.ndarray  # (neurons,) bool


def scopes_at(
    prune: np.ndarray,
    activity: np.ndarray,
    layers: Sequence[LayerInfo],
    random_sets: int,
    rng: np.random.Generator,
) -> list[Scope]:
    """All layers pruned at once, then each layer alone: the same prunings restricted to it (a
    uniform draw per layer restricted to one layer is a uniform draw in that layer)."""
    randoms = abl.matched_random_sets(prune, layers, random_sets, rng)
    lowest = least_active(prune, activity, layers)
    scopes = [Scope(None, prune, randoms, lowest)]
    for layer in layers:
        inside = np.zeros_like(prune, dtype=bool)
        inside[layer.offset : layer.offset + layer.channels] = True
        scopes.append(Scope(layer, prune & inside, randoms & inside, lowest & inside))
    return scopes


class Variants:
    """Distinct pruned-neuron masks, each run once; row 0 prunes nothing (the unpruned model)."""

    def __init__(self, n_neurons: int) -> None:
        self.masks = [np.zeros(n_neurons, dtype=bool)]
        self._index = {self.masks[0].tobytes(): 0}

    def add(self, pruned: np.ndarray) -> int:
        key = pruned.tobytes()
        if key not in self._index:
            self._index[key] = len(self.masks)
            self.masks.append(pruned.copy())
        return self._index[key]


@dataclass
class OutputSums:
    """Per variant, sums over held-out images of what `OutputChange` averages."""

    agree: np.ndarray
    abs_change: np.ndarray
    drop: np.ndarray
    correct: np.ndarray
    images: int = 0
    labelled: int = 0

    def add(self, base: torch.Tensor, logits: torch.Tensor, first: int, labels: np.ndarray | None) -> None:
        """`logits` (variants, images, classes) of variants `first`.. on images whose unpruned
        logits are `base` (images, classes)."""
        top = base.argmax(dim=1)
        rows = slice(first, first + logits.shape[0])
        predicted = logits.argmax(dim=2)
        self.agree[rows] += (predicted == top).sum(dim=1).numpy()
        self.abs_change[rows] += (logits - base).abs().mean(dim=2).sum(dim=1).double().numpy()
        index = top.view(1, -1, 1).expand(logits.shape[0], -1, 1)
        top_logit = base.gather(1, top.view(-1, 1)).view(1, -1)
        self.drop[rows] += (top_logit - logits.gather(2, index).squeeze(2)).sum(dim=1).double().numpy()
        if labels is not None:
            known = torch.from_numpy(labels >= 0)
            truth = torch.from_numpy(labels)[known]
            self.correct[rows] += (predicted[:, known] == truth).sum(dim=1).numpy()

    def change(self, variant: int) -> OutputChange:
        return OutputChange(
            top1_agreement=round(float(self.agree[variant] / self.images), 6),
            mean_abs_logit_change=round(float(self.abs_change[variant] / self.images), 6),
            top_logit_drop=round(float(self.drop[variant] / self.images), 6),
            top1_accuracy=round(float(self.correct[variant] / self.labelled), 6) if self.labelled else None,
        )


def measure_variants(
    ablated: abl.AblatedModel,
    inputs: InputSource,
    rows: np.ndarray,
    pruned: Sequence[np.ndarray],
    batch_size: int,
    labels: np.ndarray | None,
) -> OutputSums:
    """Run every variant (`pruned[0]` must prune nothing) on `rows`. Each batch of images runs
    the model up to the first read layer once; variants go `batch_size` (image, variant) pairs a
    call, so at most a batch of logits is held at once."""
    keeps = ~np.vstack(pruned)
    n_variants = keeps.shape[0]
    sums = OutputSums(
        agree=np.zeros(n_variants),
        abs_change=np.zeros(n_variants),
        drop=np.zeros(n_variants),
        correct=np.zeros(n_variants),
    )
    for start in range(0, rows.shape[0], batch_size):
        batch = rows[start : start + batch_size]
        m = batch.shape[0]
        starts = ablated.starts(inputs(batch.tolist()))
        batch_labels = labels[batch] if labels is not None else None
        per_call = max(1, batch_size // m)
        base = torch.empty(0)
        for first in range(0, n_variants, per_call):
            logits = _logits(
                ablated, starts, keeps, range(first, min(first + per_call, n_variants)), m, batch_size
            )
            if first == 0:
                base = logits[0]  # variant 0, the unpruned model, opens the first call
            sums.add(base, logits, first, batch_labels)
        sums.images += m
        sums.labelled += int((batch_labels >= 0).sum()) if batch_labels is not None else 0
    return sums


def _logits(
    ablated: abl.AblatedModel,
    starts: torch.Tensor,
    keeps: np.ndarray,
    variants: range,
    m: int,
    batch_size: int,
) -> torch.Tensor:
    """(variants, images, classes) logits of `variants` on the `m` images of `starts`."""
    chosen = np.arange(variants.start, variants.stop)
    logits = abl.masked_logits(
        ablated, starts, keeps, np.tile(np.arange(m), chosen.shape[0]), np.repeat(chosen, m), batch_size
    )
    return logits.view(chosen.shape[0], m, -1)


def pruning_report(
    ablated: abl.AblatedModel,
    inputs: InputSource,
    heldout_rows: Sequence[int] | np.ndarray,
    selection_rows: Sequence[int] | np.ndarray,
    mask: np.ndarray,
    partitions: np.ndarray,
    members: Sequence[np.ndarray],
    pooled: np.ndarray,
    thresholds: Sequence[float],
    alpha: float,
    layers: Sequence[LayerInfo],
    random_sets: int,
    seed: int,
    batch_size: int,
    labels: np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    layers_at_alpha_only: bool = False,
) -> Pruning:
    """The job's `pruning`: the curve on `heldout_rows` of the job's images, the selectivity that
    decides what is pruned counted on `selection_rows` (disjoint from them). Each layer alone is
    pruned at every threshold, or at alpha only (`layers_at_alpha_only`, a budgeted run's way to
    keep the per-layer curve's cost to one point).

    `mask` (images x neurons, active sets), `partitions` (images x levels) and `pooled` (images x
    neurons, mean activations; its selection rows rank the least-active neurons: pass the active
    sets as floats to rank by how often a neuron is active instead) cover every image of the job;
    `members` are each level's groups (clusters x neurons); `labels` the class index per image
    (-1 unknown). Random prunings are seeded by `seed` and the threshold's place in the curve.
    Costs `pruning_cost` variants per held-out image at most."""
    heldout, selection = _check_rows(heldout_rows, selection_rows, mask.shape[0])
    _check_shapes(mask, partitions, members, pooled, layers, labels)
    q_values = selection_q_values(mask, partitions, members, selection, alpha)
    activity = pooled[selection].mean(axis=0, dtype=np.float64)
    points = curve_thresholds(thresholds, alpha)
    variants = Variants(mask.shape[1])
    planned: list[tuple[float, list[Scope], list[tuple[int, list[int], int]]]] = []
    for i, threshold in enumerate(points):
        prune = ~kept_at(q_values, members, threshold)
        scopes = scopes_at(prune, activity, layers, random_sets, np.random.default_rng([seed, 0, i]))
        if layers_at_alpha_only and threshold != float(alpha):
            scopes = scopes[:1]
        rows_of = [
            (variants.add(s.significance), [variants.add(r) for r in s.random], variants.add(s.least_active))
            for s in scopes
        ]
        planned.append((threshold, scopes, rows_of))
    sums = measure_variants(ablated, inputs, heldout, variants.masks, batch_size, labels)
    n_neurons = mask.shape[1]
    curve = []
    for threshold, scopes, rows_of in planned:
        whole, *per_layer = [
            _outcome(scope, rows, sums, scope.layer.channels if scope.layer else n_neurons)
            for scope, rows in zip(scopes, rows_of, strict=True)
        ]
        layer_points = [
            LayerPruning(layer=s.layer.name, channels=s.layer.channels, **outcome)
            for s, outcome in zip(scopes[1:], per_layer, strict=True)
            if s.layer is not None
        ]
        curve.append(PruningPoint(q_threshold=threshold, layers=layer_points, **whole))
    base = sums.change(0)
    measure: Measure = "top1_accuracy" if sums.labelled else "top1_agreement"
    unpruned = float(getattr(base, measure))
    at_alpha = curve[points.index(float(alpha))]
    return Pruning(
        alpha=alpha,
        heldout_images=sums.images,
        selection_images=int(selection.shape[0]),
        labelled_images=sums.labelled,
        random_sets=random_sets,
        unpruned_top1_accuracy=base.top1_accuracy,
        at_alpha=at_alpha,
        curve=curve,
        verdict=judge(curve, at_alpha, measure, unpruned, sums, n_neurons, tolerance),
    )


def _outcome(
    scope: Scope, rows: tuple[int, list[int], int], sums: OutputSums, channels: int
) -> dict[str, Any]:
    significance, random_rows, lowest = rows
    n = int(scope.significance.sum())
    pruned = n > 0
    return {
        "neurons_pruned": n,
        "share_pruned": round(n / channels, 6),
        "significance": sums.change(significance) if pruned else None,
        "random": random_summary([sums.change(r) for r in random_rows]) if pruned and random_rows else None,
        "least_active": sums.change(lowest) if pruned else None,
    }


def random_summary(sets: list[OutputChange]) -> RandomPrunings:
    """The random prunings' mean and 95% percentile interval, output by output."""
    table = [s.model_dump() for s in sets]
    mean: dict[str, Any] = {}
    lower: dict[str, Any] = {}
    upper: dict[str, Any] = {}
    for key in table[0]:
        values = [row[key] for row in table]
        if values[0] is None:
            mean[key] = lower[key] = upper[key] = None
            continue
        low, high = np.percentile(values, PERCENTILES)
        mean[key], lower[key], upper[key] = (round(float(v), 6) for v in (np.mean(values), low, high))
    return RandomPrunings(
        mean=OutputChange(**mean), lower=OutputChange(**lower), upper=OutputChange(**upper), sets=sets
    )


def judge(
    curve: Sequence[PruningPoint],
    at_alpha: PruningPoint,
    measure: Measure,
    unpruned: float,
    sums: OutputSums,
    n_neurons: int,
    tolerance: float,
) -> PruningVerdict:
    """Whether pruning by significance loses `measure` by more than `tolerance`, at alpha and
    along the curve, with the sentence the terminal summary prints."""

    def kept(outcome: PruningPoint | LayerPruning) -> float:
        return unpruned if outcome.significance is None else float(getattr(outcome.significance, measure))

    loses_at = [p.q_threshold for p in curve if unpruned - kept(p) > tolerance]
    loses = at_alpha.q_threshold in loses_at
    worst_point = at_alpha if loses else min(curve, key=kept) if loses_at else None
    worst_layer = min(worst_point.layers, key=kept) if worst_point and worst_point.layers else None
    what = "accuracy" if measure == "top1_accuracy" else "agreement with the unpruned model"
    label = "top-1" if measure == "top1_accuracy" else "top-1 agreement"
    images = f"{sums.labelled} labelled" if measure == "top1_accuracy" else f"{sums.images}"

    def change(point: PruningPoint) -> str:
        return f"{label} {_num(unpruned)} -> {_num(kept(point))}"

    def baselines(point: PruningPoint) -> str:
        random = point.random
        versus = (
            f"random pruning of as many: {_num(getattr(random.mean, measure))} "
            f"[{_num(getattr(random.lower, measure))}, {_num(getattr(random.upper, measure))}]; "
            if random
            else ""
        )
        lowest = _num(getattr(point.least_active, measure)) if point.least_active else _num(unpruned)
        return f"({versus}least active: {lowest})"

    def where(point: PruningPoint) -> str:
        layer = min(point.layers, key=kept) if point.layers else None
        if layer is None:
            return ""
        if unpruned - kept(layer) >= (unpruned - kept(point)) / 2:
            return f"; most of the loss is in {layer.layer} ({_num(kept(layer))} pruned alone)"
        return f"; no layer alone explains it: {layer.layer} loses most pruned alone ({_num(kept(layer))})"

    head = f"pruning by significance at q <= {at_alpha.q_threshold:g}"
    if at_alpha.significance is None:
        sentence = f"{head} prunes nothing: every neuron is in a membership selective at that q"
    else:
        sentence = (
            f"{head} ({at_alpha.neurons_pruned} of {n_neurons} neurons) "
            f"{'loses' if loses else 'keeps'} {what}: {change(at_alpha)} on {images} held-out images "
            f"{baselines(at_alpha)}"
        )
        if loses:
            sentence += where(at_alpha)
        elif at_alpha.least_active is not None and (
            float(getattr(at_alpha.least_active, measure)) >= kept(at_alpha) - tolerance
        ):
            sentence += (
                "; pruning as many of the least-active neurons keeps as much, so keeping the "
                "selective neurons does no better than keeping the active ones"
            )
    if not loses and worst_point is not None:
        sentence += (
            f"; at q <= {worst_point.q_threshold:g} ({worst_point.neurons_pruned} neurons) it loses "
            f"{what}: {change(worst_point)} {baselines(worst_point)}{where(worst_point)}"
        )
    return PruningVerdict(
        measure=measure,
        tolerance=tolerance,
        loses=loses,
        loses_at=loses_at,
        worst_layer=worst_layer.layer if worst_layer else None,
        sentence=sentence,
    )


def _num(value: float | None) -> str:
    """Three decimals, trailing zeros dropped down to two: 0.995, 0.23, 1.00."""
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text[:-1] if text.endswith("0") else text


def _check_rows(
    heldout_rows: Sequence[int] | np.ndarray, selection_rows: Sequence[int] | np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray]:
    heldout = np.asarray(heldout_rows, dtype=np.int64).reshape(-1)
    selection = np.asarray(selection_rows, dtype=np.int64).reshape(-1)
    if heldout.shape[0] == 0 or selection.shape[0] == 0:
        raise ValueError(
            f"pruning needs held-out and selection images (got {heldout.shape[0]} held-out, "
            f"{selection.shape[0]} selection): split the job's images between them"
        )
    for name, rows in (("held-out", heldout), ("selection", selection)):
        if rows.min() < 0 or rows.max() >= n_images or np.unique(rows).shape[0] != rows.shape[0]:
            raise ValueError(f"{name} rows must be distinct row indices in 0..{n_images - 1}")
    shared = np.intersect1d(heldout, selection)
    if shared.shape[0]:
        raise ValueError(
            f"{shared.shape[0]} rows are both held-out and selection rows (first: {shared[:5].tolist()}): "
            "the curve must run on images the significance was not computed on"
        )
    return heldout, selection


def _check_shapes(
    mask: np.ndarray,
    partitions: np.ndarray,
    members: Sequence[np.ndarray],
    pooled: np.ndarray,
    layers: Sequence[LayerInfo],
    labels: np.ndarray | None,
) -> None:
    n_images, n_neurons = mask.shape
    if sum(layer.channels for layer in layers) != n_neurons or pooled.shape != mask.shape:
        raise ValueError(
            f"active sets {mask.shape}, pooled activations {pooled.shape} and layers "
            f"({sum(layer.channels for layer in layers)} neurons) must agree"
        )
    if partitions.shape != (n_images, len(members)) or any(m.shape[1] != n_neurons for m in members):
        raise ValueError(
            f"partitions {partitions.shape} must be images x levels for {len(members)} levels of "
            f"groups over {n_neurons} neurons"
        )
    if labels is not None and labels.shape != (n_images,):
        raise ValueError(f"labels {labels.shape} must hold one class index per image ({n_images})")
