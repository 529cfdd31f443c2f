"""Variants run from the first read layer's output give the logits of whole passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from neuron_core.neuron_axis import stack_layers
from neuron_core.read_layer_start import split_at_first_read_layer
from services.uncertainty.ablation import AblatedModel


def random_keeps(n_rows: int, n_neurons: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.random((n_rows, n_neurons)) > 0.3).astype(np.float32))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_resnet18_variants_from_layer1_equal_whole_passes(resnet: nn.Module) -> None:
    names = ["layer4", "layer2", "layer1", "layer3"]  # any order: the split finds the first to run
    layers = stack_layers(names, [512, 128, 64, 256])
    fast, whole = AblatedModel(resnet, layers), AblatedModel(resnet, layers, from_read_layer=False)
    try:
        assert fast.start is not None and fast.start.first_layer == "layer1"
        assert whole.start is None
        images = torch.randn(3, 3, 64, 64)
        keep = random_keeps(6, 960, seed=1)
        starts = fast.starts(images)
        assert starts.shape == (3, 64, 16, 16)
        rows = torch.tensor([0, 1, 2, 0, 1, 2])
        got = fast.logits(starts[rows], keep)
        want = whole.logits(images[rows], keep)
        assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
        # and no ablation leaks out: the plain model is unchanged afterwards
        with torch.inference_mode():
            assert torch.equal(resnet(images), whole.logits(images, torch.ones(3, 960)))
    finally:
        fast.close()
        whole.close()


class SkipFromStem(nn.Module):
    """The head also reads the stem: the image reaches it by a path around the first read layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Conv2d(4, 4, 3, padding=1)
        self.layer2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return self.head((self.layer2(self.layer1(stem)) + stem).mean(dim=(2, 3)))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer1(x)
        if y.mean() > 0:  # fx cannot trace a branch on a tensor's value
            y = -y
        return self.head(y.mean(dim=(2, 3)))


@pytest.mark.parametrize("model", [SkipFromStem(), DataDependent()], ids=["skip-from-stem", "untraceable"])
def test_models_without_a_clean_split_run_whole_and_stay_exact(model: nn.Module) -> None:
    names = ["layer1", "layer2"] if isinstance(model, SkipFromStem) else ["layer1"]
    layers = stack_layers(names, [4] * len(names))
    assert split_at_first_read_layer(model.eval(), names) is None
    ablated = AblatedModel(model, layers)
    try:
        images = torch.randn(2, 3, 8, 8)
        keep = random_keeps(2, 4 * len(names), seed=2)
        assert torch.equal(ablated.logits(ablated.starts(images), keep), ablated.logits(images, keep))
    finally:
        ablated.close()
