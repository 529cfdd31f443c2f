"""Causal checks on a model whose channels are built by hand to drive a class."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neuron_core.hooks import preprocess
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty.ablation import (
    AblatedModel,
    importance_check,
    matched_random_sets,
    set_rank_pvalue,
)

LAYERS = [LayerInfo("layer1", 8, 0), LayerInfo("layer2", 8, 8)]


class HandBuilt(nn.Module):
    """layer1 channels are ~1 everywhere and layer2 copies them channel by channel; class 0's logit
    reads only layer2 channels 0 and 1 (weight 5 each), class 1 reads every channel weakly. So
    the path layer1 {0, 1} -> layer2 {0, 1} (neurons 0, 1, 8, 9) drives class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
        with torch.no_grad():
            self.layer1[0].weight.fill_(0.01)
            self.layer1[0].bias.fill_(1.0)
            self.layer2[0].weight.copy_(torch.eye(8)[:, :, None, None])
            self.layer2[0].bias.zero_()
            head = self.head[2]
            head.weight.zero_()
            head.weight[0, :2] = 5.0
            head.weight[1, :] = 0.1
            head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(x)))


def group_of(*neurons: int) -> np.ndarray:
    group = np.zeros(16, dtype=bool)
    group[list(neurons)] = True
    return group


@pytest.fixture(scope="module")
def setup(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> tuple[nn.Module, AblatedModel, torch.Tensor]:
    model = HandBuilt().eval()
    # the model is resolution-free: small crops of the preprocessed images keep the test fast
    return model, AblatedModel(model, LAYERS), preprocess(read_images(range(6)))[:, :, :32, :32]


def test_planted_group_has_a_large_significant_causal_effect(
    setup: tuple[nn.Module, AblatedModel, torch.Tensor],
) -> None:
    _, ablated, inputs = setup
    result = importance_check(
        ablated, inputs, group_of(0, 1, 8, 9), LAYERS, 199, 0.05, np.random.default_rng(0)
    )
    assert result.group_drop == pytest.approx(10.0, rel=0.05)  # class 0's whole logit
    # random pairs of these 8-channel layers often hold 0 and 1 (or 8 and 9) too: 1 in 28 each
    assert result.random_drop_mean < result.group_drop / 2
    assert result.effect > 5 and result.p_value < 0.15
    assert result.interval is not None and result.interval[0] > 5
    # keeping only the group keeps class 0's logit; keeping random pairs loses it
    assert result.keep_only_drop == pytest.approx(0.0, abs=1e-4)
    assert result.keep_only_effect > 5 and result.keep_only_p_value < 0.15


def test_random_sets_have_no_causal_effect(setup: tuple[nn.Module, AblatedModel, torch.Tensor]) -> None:
    _, ablated, inputs = setup
    for seed, group in enumerate([group_of(13, 14), group_of(2, 12), group_of(4, 5)]):
        result = importance_check(ablated, inputs, group, LAYERS, 8, 0.05, np.random.default_rng(seed))
        assert result.group_drop == pytest.approx(0.0, abs=1e-4)
        assert result.p_value > 0.05
        assert not result.document(0.05)["significant"]


def test_ablation_hooks_change_nothing_when_idle(
    setup: tuple[nn.Module, AblatedModel, torch.Tensor],
) -> None:
    model, _, inputs = setup
    with torch.inference_mode():
        assert model(inputs)[:, 0].min() > 9.5


def test_random_sets_match_the_group_per_layer_drawn_from_the_whole_layer() -> None:
    group = group_of(1, 2, 9)
    sets = matched_random_sets(group, LAYERS, 400, np.random.default_rng(0))
    assert np.all(sets[:, :8].sum(axis=1) == 2) and np.all(sets[:, 8:].sum(axis=1) == 1)
    # uniform over the layer: each channel is drawn equally often, the group's own included
    assert sets[:, :8].mean(axis=0) == pytest.approx(np.full(8, 2 / 8), abs=0.06)
    assert len({row.tobytes() for row in sets}) > 10


def test_set_rank_pvalue_is_uniform_when_set_effects_are_shared_by_the_images() -> None:
    """A neuron set's effect is the same on every image: the per-image permutation treated the
    images as independent and rejected far too often; the rank among random sets does not."""
    rng = np.random.default_rng(0)
    p = []
    for _ in range(1000):
        drops = rng.normal(size=(1, 20)) + 0.1 * rng.normal(size=(8, 20))  # set effect + image noise
        p.append(set_rank_pvalue(drops))
    assert np.mean(np.array(p) <= 0.1) == pytest.approx(0.1, abs=0.03)
    assert np.mean(np.array(p) <= 0.05) == pytest.approx(0.05, abs=0.02)
    assert set_rank_pvalue(np.array([[5.0, 1.0, 2.0, 0.0]])) == 0.25  # the smallest: 1 / sets


def test_ablating_a_token_layer_zeroes_its_channels_in_every_token() -> None:
    """The ablation passes (from the first read layer's output, and the hooks on later read
    layers) on a token model: the logits with a channel ablated are those of the model with that
    channel zeroed on the last axis, in every token, by hand."""
    from tests.tiny_models import TOKEN_CHANNELS, token_net

    model = token_net()
    layers = [LayerInfo("block1", TOKEN_CHANNELS, 0), LayerInfo("block2", TOKEN_CHANNELS, TOKEN_CHANNELS)]
    images = torch.randn(4, 3, 32, 32)
    ablated = AblatedModel(model, layers)
    keep = torch.ones(4, 2 * TOKEN_CHANNELS)
    keep[:, 3] = 0.0  # block1 channel 3
    keep[:, TOKEN_CHANNELS + 9] = 0.0  # block2 channel 9
    logits = ablated.logits(ablated.starts(images), keep)
    ablated.close()
    with torch.no_grad():
        tokens = model.patch(images).flatten(2).transpose(1, 2)
        first = model.block1(tokens)
        first[..., 3] = 0.0
        second = model.block2(first)
        second[..., 9] = 0.0
        expected = model.head(second.mean(dim=1))
    torch.testing.assert_close(logits, expected)
