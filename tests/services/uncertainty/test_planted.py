"""The statistics against planted ground truth: a model with known concept detectors, generic
(always-on) neurons and random neurons (tests.tiny_models.planted_net)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from neuron_atlas_client.contracts.models import Preprocessing
from neuron_atlas_client.options import PipelineOptions
from neuron_core.active_sets import active_mask
from neuron_core.groups import build_groups, group_on
from neuron_core.hooks import ActivationReader, preprocess
from services.uncertainty import specificity
from services.uncertainty.ablation import AblatedModel, importance_check, matched_random_sets
from services.uncertainty.model_inputs import ModelInputs
from services.uncertainty.stage import JobArrays, ModelSide, compute_uncertainty
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
    ablation_max_images=4,
    batch_size=512,
    pruning_random_sets=3,
    uncertainty_budget=100,  # every concept tested; the importance test needs `full`
)
PER_CONCEPT = 10
# the planted model is resolution-free: 32 px images make the many passes fast
SMALL = Preprocessing(input_size=32, resize=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def planted_arrays(partitions_of: Any = None, per_concept: int = PER_CONCEPT) -> tuple[Any, ...]:
    images, concepts = planted_images(per_concept)
    model = planted_net()
    reader = ActivationReader(model, [layer.name for layer in LAYERS])
    try:
        pooled = reader.read(preprocess(images)).numpy()
    finally:
        reader.close()
    return images, concepts, model, pooled


def planted_job(options: PipelineOptions) -> dict[str, Any]:
    images, concepts, model, pooled = planted_arrays()
    mask = active_mask(pooled, LAYERS, options.top_fraction, options.ranking)
    partitions = np.stack([concepts, concepts // 2], axis=1)
    levels = build_groups(partitions, mask, options.min_support)
    arrays = JobArrays(partitions, mask, pooled, levels, LAYERS, labels=concepts)
    side = ModelSide(model, lambda rows: [images[i] for i in rows], torch.device("cpu"))
    uncertainty = compute_uncertainty(arrays, options, side)
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
            assert members[neuron]["selective"] and members[neuron]["q_value"] < 0.01
            assert members[neuron]["reliable"]  # 10 of 10 images: a 10-image cluster can tell
        # a random neuron that joined the group by chance is not selective
        assert not any(m["selective"] for n, m in members.items() if n not in planted_group(concept))


def test_generic_memberships_are_the_ones_the_base_rate_explains(job: dict[str, Any]) -> None:
    """The defect of the chance-rate test: an always-on neuron passes it in every cluster. A
    membership is generic when it is not selective, whatever the neuron's rate elsewhere."""
    for concept in range(PLANTED_CONCEPTS):
        members = members_of(job["document"], f"L1-{concept}")
        for neuron in PLANTED_GENERIC:
            evidence = members[neuron]
            assert evidence["generic"] and evidence["collection_rate"] == 1.0
            assert evidence["above_chance"]  # the chance-rate test passes it...
            assert not evidence["selective"]  # ...but it is not specific to the concept
        assert not any(members[n]["generic"] for n in planted_detectors(concept))
    assert job["document"]["summary"]["frequent_neurons"] == len(PLANTED_GENERIC)


def test_excluding_generic_neurons_keeps_them_out_of_every_group(job: dict[str, Any]) -> None:
    levels = build_groups(job["partitions"], job["mask"], 0.5, exclude_generic=True)
    for concept in range(PLANTED_CONCEPTS):
        group = set(np.flatnonzero(levels[0].members[concept]).tolist())
        assert planted_detectors(concept) <= group and not group & set(PLANTED_GENERIC)


def test_specificity_finds_the_planted_concepts_on_held_out_images(job: dict[str, Any]) -> None:
    for concept in range(PLANTED_CONCEPTS):
        state = job["document"]["clusters"][f"L1-{concept}"]["specificity"]
        assert state["status"] == "tested"
        result = state["result"]
        assert (result["test_images"], result["selection_images"]) == (4, 6)
        assert result["selection_group_jaccard"] > 0.6  # chosen again on 6 images: about the same
        assert result["p_value"] < 0.01 and result["significant"] and result["effect"] > 1.0
        assert result["keep_only"]["significant"]
        # the concept's drop beats the drop of as many of the most active other neurons
        assert result["test_drop"] > result["equally_active_drop"]


def random_groups_tests(
    model: Any, layers: Any, top_fraction: float, images: list[Any], seed: int, sets: int
) -> list[dict[str, Any]]:
    """The specificity test and the old causal check (importance) on `sets` clusters of random
    images, with the groups the product's own rule picks on them."""
    n_neurons = sum(layer.channels for layer in layers)
    inputs = ModelInputs(lambda rows: [images[i] for i in rows], torch.device("cpu"), prep=SMALL)
    reader = ActivationReader(model, [layer.name for layer in layers])
    try:
        pooled = reader.read(inputs(list(range(len(images))))).numpy()
    finally:
        reader.close()
    mask = active_mask(pooled, layers, top_fraction, "per_layer")
    ablated = AblatedModel(model, layers)
    rng = np.random.default_rng(seed)
    base = specificity.BaseOutputs(ablated, inputs, 512, n_neurons, keep_starts_of=set(range(len(images))))
    order = rng.permutation(len(images))
    allowed = np.ones(n_neurons, dtype=bool)
    results = []
    try:
        for k in range(sets):
            rows = np.sort(rng.choice(len(images), 8, replace=False))
            partitions = np.zeros((len(images), 1), dtype=np.int64)
            partitions[rows, 0] = 1  # the random cluster is cluster 1 of one level
            group = group_on(partitions, mask, rows, 0, 0.5, "intersect", allowed)
            concept = specificity.Concept(0, k, rows, group)
            tested = specificity.specificity_test(
                base,
                concept,
                partitions,
                mask,
                pooled,
                allowed,
                layers,
                order,
                4,
                16,
                0.5,
                "intersect",
                0.05,
                k,
            )
            old = importance_check(
                ablated, inputs(rows.tolist()), group, layers, 39, 0.05, np.random.default_rng(k), 512
            )
            results.append({"specificity": tested.result, "importance": old.p_value})
    finally:
        ablated.close()
    return results


def test_clusters_of_random_images_pass_the_specificity_test_at_about_alpha_not_the_old_check() -> None:
    """Issue 23's reproduction: clusters of random images, with the groups the product's own
    rule picks on them, on a random-weight ResNet18 (at 32 px, to be quick), on a model whose
    neurons carry no concept and on the planted one. The old causal check (importance versus
    uniform random neurons) passes most of them on the ResNet18; the specificity test passes
    about alpha of them everywhere."""
    import torchvision

    images, _ = planted_images(12, seed=5, size=32)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().eval()
    models = {
        "random ResNet18": (resnet, resnet_layers(), 0.1),
        "null model": (planted_net(planted=False), LAYERS, PLANTED_TOP_FRACTION),
        "planted model": (planted_net(), LAYERS, PLANTED_TOP_FRACTION),
    }
    rates = {}
    for name, (model, layers, top_fraction) in models.items():
        results = random_groups_tests(model, layers, top_fraction, images, 0, 40)
        rates[name] = (
            float(np.mean([r["specificity"].p_value <= 0.05 for r in results])),
            float(np.mean([r["importance"] <= 0.05 for r in results])),
        )
    # 120 random clusters in all: an SE of 0.02 at alpha 0.05
    assert np.mean([rate[0] for rate in rates.values()]) <= 0.05 + 2 * 0.02, rates
    assert rates["random ResNet18"][1] >= 0.5, rates  # the old check passed most of them


def resnet_layers() -> list[Any]:
    from neuron_core.neuron_axis import LayerInfo

    infos, offset = [], 0
    for name, channels in (("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)):
        infos.append(LayerInfo(name, channels, offset))
        offset += channels
    return infos


def test_pruning_runs_on_held_out_images(job: dict[str, Any]) -> None:
    pruning = job["document"]["pruning"]
    assert pruning is not None
    assert pruning["heldout_images"] + pruning["selection_images"] == PLANTED_CONCEPTS * PER_CONCEPT
    thresholds = [point["q_threshold"] for point in pruning["curve"]]
    assert thresholds == sorted({*OPTIONS.pruning_thresholds, OPTIONS.alpha})


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
def test_the_importance_rank_test_is_exact_for_uniformly_drawn_groups(dtype: torch.dtype) -> None:
    """The importance test's arithmetic: a uniformly drawn group is one more random set, so its
    rank is uniform and p <= alpha about alpha of the time, in float32 and bfloat16. This checks
    the rank arithmetic only: the product's own groups are not uniformly drawn (see the test of
    clusters of random images above)."""
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
            result = importance_check(ablated, inputs[rows], group, LAYERS, 19, 0.05, rng, 4096)
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
                importance_check(
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
    planted model: every specificity and keep-only decision, the pruning curve's decisions and
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
        ours, theirs = cluster["specificity"]["result"], other["specificity"]["result"]
        assert (ours is None) == (theirs is None), cluster_id
        if ours is not None:
            assert theirs["significant"] == ours["significant"], cluster_id
            assert theirs["keep_only"]["significant"] == ours["keep_only"]["significant"]
            assert theirs["effect"] == pytest.approx(ours["effect"], rel=0.05, abs=0.05)
        for key in ("expected_support", "augmented_support"):
            assert np.allclose(other["members"][key], cluster["members"][key], atol=1 / 8), (cluster_id, key)
    for point, other in zip(full["pruning"]["curve"], fast["pruning"]["curve"], strict=True):
        assert other["share_pruned"] == point["share_pruned"]
        if point["significance"] is not None:
            assert other["significance"]["top1_accuracy"] == point["significance"]["top1_accuracy"]
