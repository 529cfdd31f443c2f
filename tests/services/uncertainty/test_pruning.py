"""The pruning report on the planted model (tests.tiny_models.planted_net): held-out images, the
random and least-active baselines, the per-layer curve and the verdict."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from neuron_atlas_client.contracts.uncertainty import Pruning
from neuron_core.active_sets import active_mask
from neuron_core.groups import build_groups
from neuron_core.hooks import ActivationReader, preprocess
from services.uncertainty.ablation import AblatedModel
from services.uncertainty.pruning import (
    kept_at,
    least_active,
    pruning_cost,
    pruning_report,
    scopes_at,
    selection_q_values,
)
from tests.tiny_models import (
    PLANTED_CONCEPTS,
    PLANTED_NEURONS,
    PLANTED_TOP_FRACTION,
    planted_detectors,
    planted_images,
    planted_layers,
    planted_net,
)

LAYERS = planted_layers()
ALPHA = 0.05
THRESHOLDS = (0.001, 0.05, 0.25)
PER_CONCEPT = 10  # 5 selection and 5 held-out images of each concept


@dataclass(frozen=True)
class Planted:
    inputs: torch.Tensor
    concepts: np.ndarray
    pooled: np.ndarray
    mask: np.ndarray
    partitions: np.ndarray
    members: list[np.ndarray]
    ablated: AblatedModel
    selection: np.ndarray
    heldout: np.ndarray


@pytest.fixture(scope="module")
def planted() -> Iterator[Planted]:
    images, concepts = planted_images(PER_CONCEPT)
    model = planted_net()
    reader = ActivationReader(model, [layer.name for layer in LAYERS])
    try:
        pooled = reader.read(preprocess(images)).numpy()
    finally:
        reader.close()
    mask = active_mask(pooled, LAYERS, PLANTED_TOP_FRACTION, "per_layer")
    partitions = np.stack([concepts, concepts // 2], axis=1)
    levels = build_groups(partitions, mask, 0.5)
    ablated = AblatedModel(model, LAYERS)
    rows = np.arange(len(images))
    try:
        yield Planted(
            inputs=preprocess(images),
            concepts=concepts,
            pooled=pooled,
            mask=mask,
            partitions=partitions,
            members=[level.members for level in levels],
            ablated=ablated,
            selection=rows[rows % 2 == 0],
            heldout=rows[rows % 2 == 1],
        )
    finally:
        ablated.close()


def report(planted: Planted, **changes: Any) -> Pruning:
    arguments: dict[str, Any] = {
        "ablated": planted.ablated,
        "inputs": lambda rows: planted.inputs[list(rows)],
        "heldout_rows": planted.heldout,
        "selection_rows": planted.selection,
        "mask": planted.mask,
        "partitions": planted.partitions,
        "members": planted.members,
        "pooled": planted.pooled,
        "thresholds": THRESHOLDS,
        "alpha": ALPHA,
        "layers": LAYERS,
        "random_sets": 10,
        "seed": 0,
        "batch_size": 64,
        "labels": planted.concepts,
    }
    return pruning_report(**(arguments | changes))


def test_heldout_images_never_enter_the_selection_statistics(planted: Planted) -> None:
    """Scrambling the held-out rows' active sets, clusters and activations changes nothing that
    the report decides or measures; counted in, the same scrambled rows would change what is
    pruned (so the comparison has the power to fail)."""
    rng = np.random.default_rng(1)
    mask, partitions, pooled = planted.mask.copy(), planted.partitions.copy(), planted.pooled.copy()
    mask[planted.heldout] = rng.random((planted.heldout.shape[0], PLANTED_NEURONS)) < 0.5
    partitions[planted.heldout] = partitions[planted.heldout][::-1]
    pooled[planted.heldout] = rng.standard_normal((planted.heldout.shape[0], PLANTED_NEURONS))
    original = report(planted)
    scrambled = report(planted, mask=mask, partitions=partitions, pooled=pooled)
    assert scrambled.document() == original.document()
    q_alone = selection_q_values(planted.mask, planted.partitions, planted.members, planted.selection, ALPHA)
    every_row = np.arange(planted.mask.shape[0])
    q_with_scrambled = selection_q_values(mask, partitions, planted.members, every_row, ALPHA)
    assert any(
        (kept_at(q_alone, planted.members, q) != kept_at(q_with_scrambled, planted.members, q)).any()
        for q in THRESHOLDS
    )


def test_the_curve_runs_on_heldout_images_only(planted: Planted) -> None:
    read: list[int] = []

    def inputs(rows: Sequence[int]) -> torch.Tensor:
        read.extend(rows)
        return planted.inputs[list(rows)]

    result = report(planted, inputs=inputs)
    assert sorted(read) == planted.heldout.tolist()
    assert (result.heldout_images, result.selection_images, result.labelled_images) == (20, 20, 20)


def test_the_old_curve_on_the_selection_images_differs_and_is_refused(planted: Planted) -> None:
    """Before, the curve ran on every image and the selectivity was counted on the same images:
    at q <= 0.001 the 40 images make every detector selective, so the old curve kept all of
    them. Counted on 20 selection images, none reaches 0.001, and the held-out curve shows what
    pruning them costs. Asking for the curve on the selection images is refused."""
    every_row = np.arange(planted.mask.shape[0])
    q_same_images = selection_q_values(planted.mask, planted.partitions, planted.members, every_row, ALPHA)
    detectors = sorted(set().union(*(planted_detectors(c) for c in range(PLANTED_CONCEPTS))))
    assert kept_at(q_same_images, planted.members, 0.001)[detectors].all()
    strict = report(planted).curve[0]
    assert strict.q_threshold == 0.001 and strict.neurons_pruned == PLANTED_NEURONS
    assert strict.significance is not None and strict.significance.top1_accuracy == 0.25
    with pytest.raises(ValueError, match="both held-out and selection rows"):
        report(planted, heldout_rows=every_row, selection_rows=every_row)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"heldout_rows": []}, "needs held-out and selection images"),
        ({"heldout_rows": [40]}, "distinct row indices in 0..39"),
        ({"labels": np.zeros(3, dtype=int)}, "one class index per image"),
        ({"pooled": np.zeros((40, 3), dtype=np.float32)}, "must agree"),
    ],
)
def test_bad_input_is_refused_with_what_to_fix(
    planted: Planted, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        report(planted, **change)


def test_least_active_prunes_the_lowest_activity_neurons_per_layer() -> None:
    prune = np.zeros(PLANTED_NEURONS, dtype=bool)
    prune[[0, 5, 9]] = True  # 3 in layer1
    prune[[64, 70]] = True  # 2 in layer2
    activity = np.arange(PLANTED_NEURONS, dtype=np.float64)[::-1].copy()  # lowest at the end
    activity[30] = -1.0  # the least active of layer1
    chosen = least_active(prune, activity, LAYERS)
    assert np.flatnonzero(chosen).tolist() == [30, 62, 63, 110, 111]
    for layer in LAYERS:
        cols = slice(layer.offset, layer.offset + layer.channels)
        assert chosen[cols].sum() == prune[cols].sum()


def test_the_least_active_baseline_ranks_activity_on_the_selection_images(planted: Planted) -> None:
    """With the selection rows' activations lowest exactly where significance prunes, the
    least-active baseline is significance pruning; the same change on the held-out rows only
    leaves it as it was."""
    original = report(planted, thresholds=())
    q_values = selection_q_values(planted.mask, planted.partitions, planted.members, planted.selection, ALPHA)
    pruned = ~kept_at(q_values, planted.members, ALPHA)
    lowest_where_pruned = np.where(pruned, -10.0, 10.0).astype(np.float32)
    on_selection, on_heldout = planted.pooled.copy(), planted.pooled.copy()
    on_selection[planted.selection] = lowest_where_pruned
    on_heldout[planted.heldout] = lowest_where_pruned
    moved = report(planted, thresholds=(), pooled=on_selection).at_alpha
    assert moved.least_active == moved.significance
    assert report(planted, thresholds=(), pooled=on_heldout).at_alpha == original.at_alpha
    assert original.at_alpha.least_active != original.at_alpha.significance


def test_the_random_baseline_reports_a_percentile_interval_over_every_set(planted: Planted) -> None:
    result = report(planted, random_sets=10)
    assert result.random_sets == 10
    outcomes = [o for point in result.curve for o in [point, *point.layers] if o.neurons_pruned]
    assert outcomes
    for outcome in outcomes:
        random = outcome.random
        assert random is not None and len(random.sets) == 10
        values = np.array([s.top1_accuracy for s in random.sets], dtype=np.float64)
        low, high = np.percentile(values, [2.5, 97.5])
        assert random.lower.top1_accuracy == pytest.approx(low, abs=1e-6)
        assert random.upper.top1_accuracy == pytest.approx(high, abs=1e-6)
        assert random.mean.top1_accuracy == pytest.approx(np.mean(values), abs=1e-6)
    spread = result.at_alpha.random
    assert spread is not None and spread.lower.top1_agreement < spread.upper.top1_agreement


def test_the_per_layer_curve_prunes_each_layer_alone(planted: Planted) -> None:
    result = report(planted)
    for point in result.curve:
        assert [x.layer for x in point.layers] == [x.name for x in LAYERS]
        assert sum(x.neurons_pruned for x in point.layers) == point.neurons_pruned
        for layer, info in zip(point.layers, LAYERS, strict=True):
            assert layer.channels == info.channels
            assert layer.share_pruned == pytest.approx(layer.neurons_pruned / info.channels, abs=1e-6)
    prune = np.zeros(PLANTED_NEURONS, dtype=bool)
    prune[::3] = True
    activity = np.random.default_rng(0).random(PLANTED_NEURONS)
    whole, *alone = scopes_at(prune, activity, LAYERS, 5, np.random.default_rng(0))
    for scope, info in zip(alone, LAYERS, strict=True):
        outside = np.ones(PLANTED_NEURONS, dtype=bool)
        outside[info.offset : info.offset + info.channels] = False
        for pruned in (scope.significance, scope.least_active, *scope.random):
            assert not pruned[outside].any()
            assert pruned[~outside].sum() == prune[~outside].sum()
        assert (scope.random == whole.random & ~outside).all()


def test_significance_pruning_keeps_agreement_where_random_pruning_does_not(planted: Planted) -> None:
    """On the planted model the detectors are selective on the selection images, so pruning the
    rest keeps every held-out image's class; random prunings of as many neurons per layer lose
    the detectors. The detectors fire on one concept in four, so their mean activation is the
    lowest: pruning the least active loses them too."""
    result = report(planted)
    point = result.at_alpha
    assert point.significance is not None and point.random is not None and point.least_active is not None
    assert point.share_pruned > 0.5
    assert point.significance.top1_agreement == 1.0 and point.significance.top1_accuracy == 1.0
    assert point.random.mean.top1_agreement < 0.7 and point.random.upper.top1_agreement < 1.0
    assert point.least_active.top1_accuracy == 0.25
    assert not result.verdict.loses and result.verdict.loses_at == [0.001]
    assert result.verdict.sentence.startswith(
        "pruning by significance at q <= 0.05 (88 of 112 neurons) keeps accuracy: top-1 1.00 -> 1.00 "
        "on 20 labelled held-out images (random pruning of as many: 0.50 ["
    )


def without_detectors_of(members: list[np.ndarray], layer: str) -> list[np.ndarray]:
    offset = next(x.offset for x in LAYERS if x.name == layer)
    drop = [n for c in range(PLANTED_CONCEPTS) for n in planted_detectors(c) if (n >= 64) == (offset == 64)]
    changed = [m.copy() for m in members]
    for m in changed:
        m[:, drop] = False
    return changed


@pytest.mark.parametrize("layer", ["layer1", "layer2"])
def test_the_verdict_names_the_layer_where_significance_pruning_loses_accuracy(
    planted: Planted, layer: str
) -> None:
    """Groups that leave out one layer's detectors: significance pruning then zeroes them, the
    model loses every concept, and pruning that layer alone loses as much; the other layer
    alone keeps accuracy."""
    result = report(planted, members=without_detectors_of(planted.members, layer))
    verdict = result.verdict
    assert verdict.loses and ALPHA in verdict.loses_at and verdict.worst_layer == layer
    assert verdict.measure == "top1_accuracy"
    assert " loses accuracy: top-1 1.00 -> 0.25 on 20 labelled held-out images (random pruning" in (
        verdict.sentence
    )
    assert verdict.sentence.endswith(f"; most of the loss is in {layer} (0.25 pruned alone)")
    alone = {x.layer: x.significance.top1_accuracy for x in result.at_alpha.layers if x.significance}
    other = next(x.name for x in LAYERS if x.name != layer)
    assert alone == {layer: 0.25, other: 1.0}


def test_a_strict_threshold_that_loses_accuracy_is_said_beside_alpha(planted: Planted) -> None:
    """At q <= 0.001, 5 images per concept cannot make a detector selective: everything is pruned."""
    verdict = report(planted).verdict
    assert not verdict.loses and verdict.loses_at == [0.001]
    assert "; at q <= 0.001 (112 neurons) it loses accuracy: top-1 1.00 -> 0.25 (random pruning" in (
        verdict.sentence
    )


def test_without_labels_the_verdict_reads_agreement(planted: Planted) -> None:
    result = report(planted, labels=None, members=without_detectors_of(planted.members, "layer1"))
    assert result.unpruned_top1_accuracy is None and result.labelled_images == 0
    point = result.at_alpha
    assert point.significance is not None and point.significance.top1_accuracy is None
    assert result.verdict.measure == "top1_agreement" and result.verdict.loses
    assert (
        "loses agreement with the unpruned model: top-1 agreement 1.00 -> 0.25 on 20 held-out images"
        in result.verdict.sentence
    )


def test_pruning_cost_bounds_the_variants_the_report_runs(planted: Planted) -> None:
    assert pruning_cost(4, 3, 10) == 1 + 3 * 5 * 12
    assert pruning_cost(1, 3, 10) == 1 + 3 * 12  # one layer: pruned alone is pruned at once
    calls: list[int] = []
    logits = planted.ablated.logits

    def counting(starts: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        calls.append(starts.shape[0])
        return logits(starts, keep)

    planted.ablated.logits = counting  # type: ignore[method-assign]
    try:
        report(planted, random_sets=4)
    finally:
        del planted.ablated.logits
    cost = pruning_cost(len(LAYERS), len(THRESHOLDS), 4)
    # identical variants (0.05 and 0.25 prune the same neurons) run once: fewer than the bound
    assert 0 < sum(calls) < cost * planted.heldout.shape[0]
    assert sum(calls) % planted.heldout.shape[0] == 0


def test_a_threshold_that_prunes_nothing_says_so(planted: Planted) -> None:
    """Nothing pruned (every neuron kept at q <= 1): no outputs, and no loss."""
    result = report(planted, thresholds=(), alpha=1.0, members=[np.ones_like(m) for m in planted.members])
    point = result.at_alpha
    assert point.neurons_pruned == 0 and point.significance is None and point.random is None
    assert result.verdict.sentence.endswith(
        "prunes nothing: every neuron is in a membership selective at that q"
    )


def test_a_cluster_without_selection_images_keeps_no_neuron(planted: Planted) -> None:
    """Concept 3's images all held out: nothing shows its detectors selective, so they are
    pruned too (6 more than with its selection images)."""
    selection = planted.selection[planted.concepts[planted.selection] != 3]
    heldout = np.setdiff1d(np.arange(planted.concepts.shape[0]), selection)
    result = report(planted, selection_rows=selection, heldout_rows=heldout, thresholds=())
    q_values = selection_q_values(planted.mask, planted.partitions, planted.members, selection, ALPHA)
    assert (q_values[0][3] == 1.0).all()
    assert not kept_at(q_values, planted.members, ALPHA)[sorted(planted_detectors(3))].any()
    assert result.at_alpha.neurons_pruned == report(planted, thresholds=()).at_alpha.neurons_pruned + 6
    assert (result.selection_images, result.heldout_images, result.labelled_images) == (15, 25, 25)
