"""The input check's decisions on a job's store: what it says for labels it cannot use, for a
head that does not match the labels, and when it stays quiet. (The wrong input size itself, end
to end through the CLI: tests/neuron_atlas/test_input_check.py.)"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neuron_atlas_client.contracts.hierarchy import TargetRecord
from neuron_atlas_client.errors import InputCheckFailed
from neuron_atlas_client.options import PipelineOptions
from neuron_core.active_sets import write_activation_shard
from neuron_core.neuron_axis import LayerInfo
from neuron_core.target_model import LoadedModel
from services.activation.input_check import enforce, run_input_check
from shared.storage import artifacts
from shared.storage.stores import LocalStore, put_json


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _job(tmp_path: Path, labels: list[str | None], predicted: list[int], num_classes: int = 10) -> LocalStore:
    """A job after its activation shard: manifest (with labels), predictions and target.json."""
    store = LocalStore(tmp_path / "job")
    ids = [f"{i:064x}" for i in range(len(labels))]
    entries = [
        {"id": image_id, "file_name": f"{i}.png", "format": "png", "width": 32, "height": 32, "caption": "x"}
        | ({"label": label} if label is not None else {})
        for i, (image_id, label) in enumerate(zip(ids, labels, strict=True))
    ]
    for i, entry in enumerate(entries):
        store.put_bytes(f"images/{entry['file_name']}", _png(i))
    put_json(store, artifacts.MANIFEST, {"images": entries, "skipped": []})
    n = len(ids)
    layers = [LayerInfo("layer4", 2, 0)]
    mask = np.zeros((n, 2), dtype=bool)
    write_activation_shard(store, 0, ids, np.zeros((n, 2)), mask, layers, "file", np.array(predicted))
    record = TargetRecord(architecture="resnet18", weights="file", num_classes=num_classes)
    artifacts.write_model(store, artifacts.TARGET, record)
    return store


def _reader(store: LocalStore) -> Any:
    return lambda entry: store.get_bytes(f"images/{entry['file_name']}")


def _no_model() -> LoadedModel:
    raise AssertionError("the check loaded the model where no probe was needed")


class AlwaysNine(nn.Module):
    """A 10-class head that answers 9 whatever the image (a head trained on other classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.eye(10)[9])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))


def test_images_without_labels_are_not_checked(tmp_path):
    store = _job(tmp_path, [None] * 4, [0] * 4)
    assert run_input_check(store, PipelineOptions(), _no_model, _reader(store)) is None
    assert not store.exists(artifacts.INPUT_CHECK)


def test_a_model_that_recognises_its_labelled_images_gets_no_warning_and_no_probe(tmp_path):
    labels = [str(i % 4) for i in range(20)]
    predicted = [i % 4 for i in range(20)]
    predicted[0] = 1  # 19 of 20 right
    store = _job(tmp_path, labels, predicted)
    check = run_input_check(store, PipelineOptions(strict=True), _no_model, _reader(store))
    assert check is not None and check.top1_accuracy == 0.95 and check.chance == 0.1
    assert check.warnings == [] and check.probe == []
    enforce(check, PipelineOptions(strict=True))  # nothing to fail on


def test_labels_that_are_no_class_index_are_said_to_be_unusable(tmp_path):
    store = _job(tmp_path, ["cat", "dog", "cat"], [0, 1, 2])
    check = run_input_check(store, PipelineOptions(), _no_model, _reader(store))
    assert check is not None
    [warning] = check.warnings
    assert warning.kind == "labels"
    assert warning.message.startswith("None of the 3 class labels is a class index ('cat', 'dog', 'cat')")
    assert "class index" in warning.fix and "--labels" in warning.fix


def test_labels_beyond_the_heads_outputs_name_the_head(tmp_path):
    store = _job(tmp_path, ["3", "12", "7", "15"], [3, 2, 7, 1], num_classes=10)
    check = run_input_check(store, PipelineOptions(), _no_model, _reader(store))
    assert check is not None
    [warning] = check.warnings
    assert warning.kind == "head"
    assert "2 of the 4 labelled images have a class index beyond the model's 10 outputs" in warning.message
    assert "--weights FILE.safetensors" in warning.fix and "(0 to 9)" in warning.fix


def test_near_chance_with_predictions_of_unlabelled_classes_names_the_head_and_strict_fails(tmp_path):
    store = _job(tmp_path, [str(i % 4) for i in range(16)], [9] * 16)
    target = LoadedModel(architecture="resnet18", module=AlwaysNine().eval(), weights="file")
    check = run_input_check(store, PipelineOptions(), lambda: target, _reader(store))
    assert check is not None and check.top1_accuracy == 0.0
    assert check.probe_images == 16 and len(check.probe) >= 9  # sizes and normalisations tried
    assert all(result.top1_accuracy == 0.0 for result in check.probe)  # none does better
    [warning] = check.warnings
    assert warning.kind == "head"
    assert "100% of its predictions are classes no image is labelled with" in warning.message
    with pytest.raises(InputCheckFailed) as failed:
        enforce(check, PipelineOptions(strict=True))
    assert failed.value.problem == warning.message and failed.value.fix == warning.fix
    assert failed.value.kind == "model-input-mismatch"
    assert artifacts.read_model(store, artifacts.INPUT_CHECK, type(check)) == check
