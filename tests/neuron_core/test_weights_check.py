"""A file is compared with its architecture on the meta device, before any allocation."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

from neuron_atlas_client.errors import ModelLoadError
from neuron_core.architectures import Architecture
from neuron_core.target_model import load_target_model
from neuron_core.weights_check import ModelTooLarge, QuantisedWeights, WeightsMismatch, check_fits
from shared.models.safetensors_file import check_safetensors


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_tiny_file_declared_as_a_huge_model_is_refused_on_the_meta_device(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, str(path))
    arch = Architecture.parse("timm:vit_huge_patch14_224")
    before = peak_mb()
    with pytest.raises(WeightsMismatch) as err:
        check_fits(arch, check_safetensors(path), None, "tiny.safetensors")
    assert "weight" in err.value.unexpected and err.value.missing
    with pytest.raises(ModelTooLarge, match="630"):
        check_fits(arch, check_safetensors(path), None, "tiny.safetensors", max_parameters=150_000_000)
    assert peak_mb() - before < 200  # the model itself would take 2.5 GB


def test_the_head_size_is_read_off_the_header(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_torch(tvm.resnet18(num_classes=7).state_dict(), str(path))
    fit = check_fits(Architecture.parse("resnet18"), check_safetensors(path), None, "m")
    assert fit.num_classes == 7 and fit.parameters == sum(
        p.numel() for p in tvm.resnet18(num_classes=7).parameters()
    )


def test_integer_weights_are_refused_and_float64_ones_are_said(tmp_path: Path) -> None:
    state = tvm.resnet18(num_classes=3).state_dict()
    quantised = tmp_path / "q.safetensors"
    save_torch(
        {k: v.to(torch.int8) if v.is_floating_point() else v for k, v in state.items()}, str(quantised)
    )
    with pytest.raises(QuantisedWeights, match="quantised"):
        load_target_model("resnet18", str(quantised))
    wide = tmp_path / "w.safetensors"
    save_torch({k: v.double() if k.startswith("fc.") else v for k, v in state.items()}, str(wide))
    loaded = load_target_model("resnet18", str(wide))
    assert loaded.warnings and "float64" in loaded.warnings[0]
    assert loaded.module.fc.weight.dtype == torch.float32


def test_a_registry_check_names_the_file_not_its_path(tmp_path: Path) -> None:
    folder = tmp_path / "neuron-atlas-model-secret"
    folder.mkdir()
    path = folder / "model.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(ModelLoadError) as err:
        load_target_model("resnet18", str(path), file_name="model.safetensors")
    assert "secret" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_a_job_cannot_name_an_architecture_over_the_workers_cap() -> None:
    with pytest.raises(ModelTooLarge, match="parameters"):
        load_target_model("timm:vit_huge_patch14_224", allow_random_weights=True, max_parameters=150_000_000)
