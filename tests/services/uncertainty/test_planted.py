"""The statistics against planted ground truth: a model with known concept detectors, generic
(always-on) neurons and random neurons (tests.tiny_models.planted_net)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from neuron_core.active_sets import active_mask
from neuron_core.groups import build_groups
from neuron_core.hooks import ActivationReader, preprocess
from services.uncertainty.ablation import AblatedModel, causal_check, matched_random_sets
from services.uncertainty.stage import compute_uncertainty
from shared.options import PipelineOptions
from tests.tiny_models import (
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
OPTIONS = PipelineOptions(
    top_fraction=PLANTED_TOP_FRACTION,
    bootstrap_resamples=0,
    mc_samples=2,
    tta_samples=0,
    ablation_random_sets=199,
    ablation_max_images=4,
    batch_size=512,
    pruning_random_sets=3,
)
PER_CONCEPT = 10


def planted_job(options: PipelineOptions) -> dict[str, Any]:
    images, concepts = planted_images(PER_CONCEPT)
    model = planted_net()
    reader = ActivationReader(model, [layer.name for layer in LAYERS])
    try:
        pooled = reader.read(preprocess(images)).numpy()
    finally:
        reader.close()
    mask = active_mask(pooled, LAYERS, options.top_fraction, options.ranking)
    partitions = np.stack([concepts, concepts // 2], axis=1)
    levels = build_groups(partitions, mask, options.min_support)
    uncertainty = compute_uncertainty(
        partitions,
        mask,
        levels,
        LAYERS,
        options,
        model,
        lambda rows: [images[i] for i in rows],
        torch.device("cpu"),
        labels=concepts,
    )
    return {"document": uncertainty.document(), "mask": mask, "partitions": partitions}


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    return planted_job(OPTIONS)


def members_of(document: dict[str, Any], cluster: str) -> dict[int, dict[str, Any]]:
    members = document["clusters"][cluster]["members"]
    columns = {key: values for key, values in members.items() if values is not None}
    return {n: {key: columns[key][j] for key in columns} for j, n in enumerate(members["neuron"])}


def test_planted_memberships_are_recovered_as_selective(job: dict[str, Any]) -> None:
    for concept in range(PLANTED_CONCEPTS):
        members = members_of(job["document"], f"L1-{concept}")
        assert planted_group(concept) <= set(members)
        for neuron in planted_detectors(concept):
            assert members[neuron]["significant"] and members[neuron]["q_value"] < 0.01
        # a random neuron that joined the group by chance is not selective
        assert not any(m["significant"] for n, m in members.items() if n not in planted_group(concept))


def test_generic_neurons_are_flagged_and_not_selective(job: dict[str, Any]) -> None:
    """The defect of the chance-rate test: an always-on neuron passes it in every cluster."""
    for concept in range(PLANTED_CONCEPTS):
        members = members_of(job["document"], f"L1-{concept}")
        for neuron in PLANTED_GENERIC:
            evidence = members[neuron]
            assert evidence["generic"] and evidence["collection_rate"] == 1.0
            assert evidence["above_chance"]  # the chance-rate test passes it...
            assert not evidence["significant"]  # ...but it is not specific to the concept
        assert not any(members[n]["generic"] for n in planted_detectors(concept))
    assert job["document"]["summary"]["generic_neurons"] == len(PLANTED_GENERIC)


def test_excluding_generic_neurons_keeps_them_out_of_every_group(job: dict[str, Any]) -> None:
    levels = build_groups(job["partitions"], job["mask"], 0.5, exclude_generic=True)
    for concept in range(PLANTED_CONCEPTS):
        group = set(np.flatnonzero(levels[0].members[concept]).tolist())
        assert planted_detectors(concept) <= group and not group & set(PLANTED_GENERIC)


def test_causal_check_separates_planted_groups(job: dict[str, Any]) -> None:
    for concept in range(PLANTED_CONCEPTS):
        causal = job["document"]["clusters"][f"L1-{concept}"]["causal"]
        assert causal["p_value"] < 0.01 and causal["significant"]
        assert causal["q_value"] < 0.01


def test_pruning_curve_against_random_pruning_at_the_same_share(job: dict[str, Any]) -> None:
    pruning = job["document"]["pruning"]
    thresholds = [point["q_threshold"] for point in pruning["curve"]]
    assert thresholds == sorted({*OPTIONS.pruning_thresholds, OPTIONS.alpha})
    shares = [point["share_pruned"] for point in pruning["curve"]]
    assert shares == sorted(shares, reverse=True)  # stricter q prunes more
    assert pruning["labelled_images"] == PLANTED_CONCEPTS * PER_CONCEPT
    assert pruning["unpruned_top1_accuracy"] == 1.0
    # at alpha the detectors stay: the model still knows every concept; random pruning of as
    # many neurons per layer, drawn from the whole layer, loses them
    assert pruning["pruned"]["top1_accuracy"] == 1.0 and pruning["share_pruned"] > 0.5
    assert np.mean([r["top1_accuracy"] for r in pruning["random"]]) < 0.9


def test_random_pruning_is_drawn_from_the_whole_layer() -> None:
    """Random sets drawn outside a pruned set that is half a layer or less overlap it not at all."""
    rng = np.random.default_rng(0)
    for share in (0.3, 0.5):
        prune = np.zeros(N_NEURONS, dtype=bool)
        for layer in LAYERS:
            prune[layer.offset : layer.offset + round(share * layer.channels)] = True
        sets = matched_random_sets(prune, LAYERS, 400, rng)
        assert np.all(sets.sum(axis=1) == prune.sum())
        overlap = (sets & prune).sum() / sets.sum()
        assert overlap == pytest.approx(prune.mean(), abs=0.03)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_check_false_positive_rate_is_about_alpha_under_the_null(dtype: torch.dtype) -> None:
    """A model whose neurons carry no concept, random groups: p <= alpha about alpha of the time,
    in float32 and in the bfloat16 passes that `pass_precision=auto` picks on capable hardware."""
    images, _ = planted_images(4, seed=1)
    model = planted_net(planted=False)
    inputs = preprocess(images)[:, :, :32, :32]  # the model is resolution-free: small is fast
    ablated = AblatedModel(model, LAYERS, dtype=dtype)
    rng = np.random.default_rng(0)
    p_values = []
    try:
        for _ in range(200):
            group = np.zeros(N_NEURONS, dtype=bool)
            group[rng.choice(64, 5, replace=False)] = True
            group[64 + rng.choice(48, 3, replace=False)] = True
            rows = rng.choice(len(images), 6, replace=False)
            result = causal_check(ablated, inputs[rows], group, LAYERS, 19, 0.05, rng, 4096)
            p_values.append(result.p_value)
    finally:
        ablated.close()
    # 200 draws: the standard error at 0.05 is 0.015
    assert 0.01 <= np.mean(np.array(p_values) <= 0.05) <= 0.09


def test_stopping_early_gives_the_decisions_of_every_random_set() -> None:
    """Besag-Clifford stopping on planted groups (causal) and random groups (not): the same
    decisions and the same p-values at or below alpha as running all 39 sets, with fewer sets
    run for groups that cannot reach alpha."""
    images, _ = planted_images(4, seed=2)
    inputs = preprocess(images)[:, :, :32, :32]
    ablated = AblatedModel(planted_net(), LAYERS)
    rng = np.random.default_rng(3)
    groups = []
    for concept in range(PLANTED_CONCEPTS):
        planted = np.zeros(N_NEURONS, dtype=bool)
        planted[sorted(planted_group(concept))] = True
        groups.append(planted)
    for _ in range(12):
        group = np.zeros(N_NEURONS, dtype=bool)
        group[rng.choice(N_NEURONS, 8, replace=False)] = True
        groups.append(group)
    run_sets = []
    try:
        for k, group in enumerate(groups):
            rows = np.random.default_rng(k).choice(len(images), 6, replace=False)
            results = [
                causal_check(
                    ablated, inputs[rows], group, LAYERS, 39, 0.05, np.random.default_rng(k), 512, 8, seq
                )
                for seq in (True, False)
            ]
            fast, full = results
            for p_fast, p_full in (
                (fast.p_value, full.p_value),
                (fast.keep_only_p_value, full.keep_only_p_value),
            ):
                assert (p_fast <= 0.05) == (p_full <= 0.05), (k, p_fast, p_full)
                if p_full <= 0.05:
                    assert p_fast == p_full
                else:
                    assert p_fast > 0.05
            run_sets.append((full.p_value <= 0.05, fast.random_sets))
    finally:
        ablated.close()
    significant = [n for causal, n in run_sets if causal]
    others = [n for causal, n in run_sets if not causal]
    assert significant and all(n == 39 for n in significant)  # a group that can reach alpha runs all
    assert others and np.mean(others) < 39 * 0.6  # the rest stop early


def test_bfloat16_passes_give_the_float32_decisions_on_planted_ground_truth() -> None:
    """The cheaper number format of the model passes (precision.py) against float32 on the
    planted model: every causal and keep-only decision, the pruning curve's decisions and
    accuracies are the same, and dropout-pass supports move by less than one pass in 8."""
    options = OPTIONS.model_copy(update={"mc_samples": 8, "tta_samples": 2})
    documents = {
        precision: planted_job(options.model_copy(update={"pass_precision": precision}))["document"]
        for precision in ("float32", "bfloat16")
    }
    full, fast = documents["float32"], documents["bfloat16"]
    assert full["method"]["pass_precision"] == "float32"
    assert fast["method"]["pass_precision"] == "bfloat16"
    for cluster_id, cluster in full["clusters"].items():
        other = fast["clusters"][cluster_id]
        if cluster["causal"] is not None:
            assert other["causal"]["significant"] == cluster["causal"]["significant"], cluster_id
            assert (
                other["causal"]["keep_only"]["significant"] == cluster["causal"]["keep_only"]["significant"]
            )
            assert other["causal"]["effect"] == pytest.approx(cluster["causal"]["effect"], rel=0.05, abs=0.05)
        for key in ("expected_support", "augmented_support"):
            assert np.allclose(other["members"][key], cluster["members"][key], atol=1 / 8), (cluster_id, key)
    for point, other in zip(full["pruning"]["curve"], fast["pruning"]["curve"], strict=True):
        assert other["share_pruned"] == point["share_pruned"]
        if point["pruned"] is not None:
            assert other["pruned"]["top1_accuracy"] == point["pruned"]["top1_accuracy"]
