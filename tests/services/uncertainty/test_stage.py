"""The uncertainty store step on a small job written to a LocalStore, with a tiny model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from neuron_atlas_client.contracts.uncertainty import EVIDENCE_COLUMNS
from neuron_atlas_client.options import PipelineOptions
from neuron_core.active_sets import active_mask, write_activation_shard
from neuron_core.neuron_axis import LayerInfo
from neuron_core.target_model import LoadedModel
from services.activation.stage import run_groups
from services.caption.stage import write_caption_shard
from services.uncertainty.plan import MIN_BUDGET_IMAGES
from services.uncertainty.stage import class_labels, correct_across_clusters, run_uncertainty
from shared.storage import artifacts
from shared.storage.stores import LocalStore, get_json, put_json, put_npy

from .test_model_uncertainty import TinyNet

LAYERS = [LayerInfo("layer1", 16, 0), LayerInfo("layer2", 8, 16)]
OPTIONS = PipelineOptions(
    top_fraction=0.25,
    bootstrap_resamples=30,
    mc_samples=3,
    tta_samples=2,
    ablation_random_sets=3,
    ablation_max_images=3,
)


def write_job(root: Path, images: list[Image.Image]) -> LocalStore:
    """12 images in 4 level-1 clusters, 2 parents; each level-1 cluster lifts its own neurons.
    Everything the uncertainty stage reads: manifest and images, captions, partitions,
    activation shards and groups.json."""
    store = LocalStore(root)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 3)
    put_npy(store, artifacts.PARTITIONS, np.stack([labels, labels // 2], axis=1).astype(np.int32))
    pooled = rng.normal(size=(12, 24)).astype(np.float32)
    for c in range(4):
        pooled[labels == c, c * 3 : c * 3 + 3] += 5  # layer1 neurons
        pooled[labels == c, 16 + c] += 5  # a layer2 neuron
    ids = [f"{i:064x}" for i in range(12)]
    entries = []
    for image_id, image in zip(ids, images, strict=True):
        data = io.BytesIO()
        image.save(data, format="PNG")
        store.put_bytes(artifacts.image_key(image_id, "png"), data.getvalue())
        entries.append({"id": image_id, "file_name": f"{image_id[-2:]}.png", "format": "png", "caption": "c"})
    put_json(store, artifacts.MANIFEST, {"images": entries, "skipped": []})
    rows = [{"image_id": i, "caption": "c", "source": "provided"} for i in ids]
    write_caption_shard(store, 0, None, rows, [])
    mask = active_mask(pooled, LAYERS, 0.25, "per_layer")
    write_activation_shard(store, 0, ids, pooled, mask, LAYERS, "random")
    run_groups(store, OPTIONS)
    return store


def run_step(root: Path, images: list[Image.Image]) -> dict[str, Any]:
    store = write_job(root, images)
    target = LoadedModel("tiny", TinyNet(p=0.2).eval(), "random")
    return run_uncertainty(store, OPTIONS, target, artifacts.stored_image_reader(store)).document()


def test_step_writes_evidence_for_every_membership(tmp_path: Path, images: list[Image.Image]) -> None:
    document = run_step(tmp_path, images)
    assert get_json(LocalStore(tmp_path), artifacts.UNCERTAINTY) == document
    level1 = document["clusters"]["L1-2"]
    members = level1["members"]
    assert {6, 7, 8, 18} <= set(members["neuron"])  # the planted ones (noise may add one)
    # every column of the membership table is an Evidence field, one entry per member
    assert set(members) == {"neuron", *EVIDENCE_COLUMNS}
    assert all(len(v) == len(members["neuron"]) for v in members.values() if v is not None)
    assert len(members["inclusion_probability"]) == len(members["neuron"])
    # a 3-image cluster cannot show a reliable membership at alpha 0.05: too few images to tell
    assert members["reliable"] == [None] * len(members["neuron"])
    assert members["generic"] == [not s for s in members["selective"]]
    # 12 images: the budget of a small job covers the passes' sample of all 12
    plan = document["plan"]
    assert (
        plan["budget"] == OPTIONS.uncertainty_budget
        and plan["allowed"] == OPTIONS.uncertainty_budget * MIN_BUDGET_IMAGES
    )
    assert all(0 <= p <= 1 for p in level1["members"]["expected_support"])
    assert document["method"]["model_uncertainty"] == {
        "method": "mc_dropout",
        "interpretation": "epistemic",
        "samples": 3,
        "images": 12,
        "dropout_rate": None,
        "calibration": None,
    }
    assert document["method"]["input_sensitivity"] == {"method": "tta", "samples": 2, "images": 12}
    assert len(members["augmented_support"]) == len(members["neuron"])
    entropy = level1["model_uncertainty"]
    assert entropy["images"] == 3
    assert entropy["total"] == pytest.approx(
        entropy["expected_entropy"] + entropy["mutual_information"], abs=2e-6
    )
    assert len(document["image_model_uncertainty"]["mutual_information"]) == 12
    # 3-image level-1 concepts hold out one image against 9 others: p can reach 0.1 at best
    assert level1["specificity"] == {
        "status": "too_few_images",
        "note": "not tested: 3 images",
        "result": None,
    }
    top = document["clusters"]["L2-0"]
    assert top["specificity"]["status"] in ("tested", "no_group")
    assert level1["difference_test"]["status"] in ("tested", "too_few_images")
    assert level1["importance"]["status"] == "off"
    # tested decisions read the q-value across the job's clusters
    tested = [c["specificity"]["result"] for c in document["clusters"].values() if c["specificity"]["result"]]
    assert all(t["significant"] == (t["q_value"] <= OPTIONS.alpha) for t in tested)
    assert all(t["q_value"] >= t["p_value"] for t in tested)
    counts = document["summary"]["specificity"]
    assert counts["tested"] == len(tested)
    assert counts["not_tested_too_few_images"] >= 4


@pytest.mark.parametrize("native", [True, False])
def test_step_records_the_number_format_its_model_passes_ran_in(
    tmp_path: Path, images: list[Image.Image], monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """`pass_precision=auto`: bfloat16 where the CPU computes it, float32 where it does not, and
    float32 for a model that cannot run in bfloat16 here (an operation without a bfloat16
    kernel), with a warning instead of a failed job."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    store = write_job(tmp_path / "plain", images)
    target = LoadedModel("tiny", TinyNet(p=0.2).eval(), "random")
    document = run_uncertainty(store, OPTIONS, target, artifacts.stored_image_reader(store)).document()
    assert document["method"]["pass_precision"] == ("bfloat16" if native else "float32")

    refusing = TinyNet(p=0.2).eval()

    def no_bfloat16(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if inputs[0].dtype == torch.bfloat16:
            raise RuntimeError('"addmm" not implemented for BFloat16')

    refusing.head.register_forward_pre_hook(no_bfloat16)
    store = write_job(tmp_path / "refusing", images)
    target = LoadedModel("tiny", refusing, "random")
    document = run_uncertainty(store, OPTIONS, target, artifacts.stored_image_reader(store)).document()
    assert document["method"]["pass_precision"] == "float32"
    assert document["method"]["model_uncertainty"] is not None


def test_step_repeats_exactly(tmp_path: Path, images: list[Image.Image]) -> None:
    assert run_step(tmp_path / "a", images) == run_step(tmp_path / "b", images)


def test_step_without_a_model_skips_the_model_passes(tmp_path: Path, images: list[Image.Image]) -> None:
    document = run_uncertainty(write_job(tmp_path, images), OPTIONS).document()
    assert document["pruning"] is None and document["method"]["model_uncertainty"] is None
    assert all(c["specificity"]["status"] in ("off", "no_group") for c in document["clusters"].values())
    assert document["plan"]["steps"][-1] == {
        **document["plan"]["steps"][-1],
        "name": "model passes",
        "ran": False,
        "note": "no model passes: no target model",
    }
    members = document["clusters"]["L1-0"]["members"]
    planted = [
        p
        for n, p in zip(members["neuron"], members["inclusion_probability"], strict=True)
        if n in {0, 1, 2, 16}
    ]
    assert planted == [1.0, 1.0, 1.0, 1.0]  # active in all 3 images: in every resample's group


def test_the_stage_reads_the_stored_groups_and_does_not_apply_the_group_rule_again(
    tmp_path: Path, images: list[Image.Image]
) -> None:
    store = write_job(tmp_path, images)
    groups = get_json(store, artifacts.GROUPS)
    # Take one neuron out of a level-1 group in groups.json: the rule would put it back.
    cluster = groups["levels"][0]["clusters"][2]
    dropped = cluster["group"].pop(0)
    cluster["counts"].pop(0)
    put_json(store, artifacts.GROUPS, groups)
    members = run_uncertainty(store, OPTIONS).clusters["L1-2"].members
    assert dropped not in members.neuron
    assert members.neuron == cluster["group"]


def test_each_tests_decisions_are_corrected_across_clusters(
    tmp_path: Path, images: list[Image.Image]
) -> None:
    """p = 0.04 passes alone at alpha 0.05; among five clusters' tests its BH q-value is 0.2."""
    from neuron_atlas_client.contracts.uncertainty import (
        ClusterStats,
        DifferenceResult,
        DifferenceTest,
        Importance,
    )

    template = ClusterStats.model_validate(run_step(tmp_path, images)["clusters"]["L1-0"])
    clusters = {}
    for i, p in enumerate([0.04, 0.5, 0.6, 0.7, 0.8]):
        result = DifferenceResult(
            child_support=1.0,
            sibling_support=0.0,
            statistic=1.0,
            child_carrier_share=1.0,
            sibling_carrier_share=0.0,
            permutations=999,
            p_value=p / 100,
            min_p_value=0.001,
        )
        clusters[f"L1-{i}"] = template.model_copy(
            update={
                "difference_test": DifferenceTest(status="tested", note="tested", result=result),
                "importance": Importance(status="off", note="off"),
            },
            deep=True,
        )
    correct_across_clusters(clusters, 0.05)
    first = clusters["L1-0"].difference_test
    assert first is not None and first.result is not None
    assert first.result.q_value == pytest.approx(0.002) and first.result.significant
    last = clusters["L1-4"].difference_test
    assert last is not None and last.result is not None and last.result.q_value == pytest.approx(0.008)


def test_class_labels_come_from_the_manifest() -> None:
    manifest = {"images": [{"id": "a", "label": "3"}, {"id": "b"}, {"id": "c", "label": "cat"}]}
    assert class_labels(manifest, ["c", "a", "b"]).tolist() == [-1, 3, -1]  # type: ignore[union-attr]
    assert class_labels({"images": [{"id": "a"}]}, ["a"]) is None


def test_the_evidence_reference_page_is_what_the_code_says() -> None:
    """docs/reference/evidence.md is generated from the tests' nulls and Evidence's fields."""
    from services.uncertainty.reference import PAGE, page_text

    assert PAGE.read_text() == page_text(), "run python -m services.uncertainty.reference"
