"""Monte Carlo dropout, injected dropout, test-time augmentation and the entropy split on tiny
models."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from neuron_core.layers import LayerInfo
from services.uncertainty import model_uncertainty
from services.uncertainty.entropy import decompose
from services.uncertainty.model_inputs import ModelInputs
from services.uncertainty.model_uncertainty import (
    Method,
    augment,
    expected_support,
    pick_method,
    stochastic_active_sets,
)

LAYERS = [LayerInfo("layer1", 16, 0), LayerInfo("layer2", 8, 16)]
CPU = torch.device("cpu")


class TinyNet(nn.Module):
    """Stem, dropout (before the read layers, or only in the classifier), two read layers."""

    def __init__(self, p: float, dropout_in_features: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, stride=8), nn.ReLU())
        self.drop = nn.Dropout(p) if dropout_in_features else nn.Identity()
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(16, 8, 3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.drop(self.stem(x)))))


def run(
    model: nn.Module,
    read: Callable[[Sequence[int]], list[Image.Image]],
    seed: int = 0,
    method: Method | None = None,
) -> np.ndarray:
    activity = stochastic_active_sets(
        model.eval(), LAYERS, ModelInputs(read, CPU), 12, 0.25, "per_layer", 16, seed, CPU, 5, method=method
    )
    return activity.passes


def test_mc_dropout_gives_probabilities_strictly_between_0_and_1(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.3)
    assert pick_method(model, ["layer1", "layer2"], CPU) == "mc_dropout"
    probability = run(model, read_images).mean(axis=0)
    uncertain = (probability > 0) & (probability < 1)
    assert uncertain.mean() > 0.1
    assert not model.training and not model.drop.training  # dropout is off again afterwards


def test_dropout_with_p_zero_is_no_dropout_and_gets_injected_dropout(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    # ViT and Swin carry Dropout(p=0) before their blocks: it drops nothing, so it is no MC dropout
    model = TinyNet(p=0.0)
    assert pick_method(model, ["layer1", "layer2"], CPU) == "injected_dropout"
    activity = stochastic_active_sets(
        model.eval(),
        LAYERS,
        ModelInputs(read_images, CPU),
        12,
        0.25,
        "per_layer",
        16,
        0,
        CPU,
        5,
        dropout_rate=0.2,
    )
    assert activity.method == "injected_dropout" and activity.dropout_rate == 0.2
    probability = activity.probability
    assert ((probability > 0) & (probability < 1)).mean() > 0.05  # the injected dropout is real noise
    # and it is gone afterwards: two plain passes agree
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(batch), model(batch))


def test_dropout_only_after_the_read_layers_gets_injected_dropout(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.3, dropout_in_features=False)
    assert pick_method(model, ["layer1", "layer2"], CPU) == "injected_dropout"
    passes = run(model, read_images)
    assert ((passes.mean(axis=0) > 0) & (passes.mean(axis=0) < 1)).any()


def test_augmentation_is_its_own_method_for_input_sensitivity(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.0, dropout_in_features=False)
    activity = stochastic_active_sets(
        model.eval(), LAYERS, ModelInputs(read_images, CPU), 12, 0.25, "per_layer", 6, 0, CPU, 5, method="tta"
    )
    assert activity.method == "tta" and activity.entropy is None and activity.dropout_rate is None
    assert ((activity.probability > 0) & (activity.probability < 1)).any()


def test_dropout_passes_split_predictive_entropy_into_aleatoric_and_epistemic(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    activity = stochastic_active_sets(
        TinyNet(p=0.3).eval(), LAYERS, ModelInputs(read_images, CPU), 12, 0.25, "per_layer", 8, 0, CPU, 5
    )
    split = activity.entropy
    assert split is not None and split.total.shape == (12,)
    np.testing.assert_allclose(split.total, split.aleatoric + split.epistemic, atol=1e-12)
    assert (split.epistemic > 0).all() and (split.total <= np.log(4) + 1e-9).all()


def test_entropy_split_of_known_distributions() -> None:
    # two confident passes that disagree: no aleatoric part, all epistemic (log 2)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    split = decompose(disagree)
    assert split.aleatoric[0] == 0 and split.epistemic[0] == pytest.approx(np.log(2))
    # two passes that agree on a coin flip: all aleatoric, no epistemic
    agree = np.full((2, 1, 2), 0.5)
    split = decompose(agree)
    assert split.aleatoric[0] == pytest.approx(np.log(2)) and split.epistemic[0] == pytest.approx(0)


def test_stochastic_passes_repeat_exactly_with_the_seed(
    read_images: Callable[[Sequence[int]], list[Image.Image]],
) -> None:
    model = TinyNet(p=0.3)
    assert np.array_equal(run(model, read_images, seed=4), run(model, read_images, seed=4))
    assert not np.array_equal(run(model, read_images, seed=4), run(model, read_images, seed=5))


def test_expected_support_is_the_mean_support_over_passes() -> None:
    passes = np.zeros((2, 4, 3), dtype=bool)
    passes[0, :2, 0] = True  # pass 0: neuron 0 active in both images of cluster 0
    passes[1, 0, 0] = True  # pass 1: in one of them
    mean, sd = expected_support(passes, np.array([0, 0, 1, 1]), 2)
    assert mean[0, 0] == 0.75 and sd[0, 0] == 0.25
    assert mean[1, 0] == 0 and sd[1, 0] == 0


def test_augmentation_is_mild_and_keeps_the_batch_shape() -> None:
    batch = torch.randn(4, 3, 32, 32)
    views = augment(batch, torch.Generator().manual_seed(0))
    assert views.shape == batch.shape
    assert not torch.equal(views, batch)
    # pixels stay in range: normalised values of [0, 1] pixels
    assert views.min() >= (0 - 0.485) / 0.229 - 1e-4 and views.max() <= (1 - 0.406) / 0.225 + 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_injected_dropout_passes_start_at_the_first_read_layer_with_the_same_draws(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropout injected on the read layers' inputs changes nothing before the first of them: its
    input is computed once per batch, and the passes from there are the whole passes, draw for
    draw (active sets and the entropy split equal), with the stem run once per batch."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    layers = [LayerInfo("layer1", 64, 0), LayerInfo("layer3", 256, 64)]
    images = torch.randn(6, 3, 64, 64)
    stem_runs = []
    model.conv1.register_forward_hook(lambda *_: stem_runs.append(1))
    split = model_uncertainty.split_at_first_read_layer
    monkeypatch.setattr(
        model_uncertainty, "split_at_first_read_layer", lambda *a, **k: split(*a, **k) or pytest.fail()
    )
    results = {}
    for from_read_layer in (True, False):
        stem_runs.clear()
        results[from_read_layer] = stochastic_active_sets(
            model,
            layers,
            lambda rows: images[list(rows)],
            6,
            0.1,
            "per_layer",
            4,
            3,
            CPU,
            4,
            dtype=dtype,
            from_read_layer=from_read_layer,
        )
        assert results[from_read_layer].method == "injected_dropout"
        assert len(stem_runs) == (2 if from_read_layer else 2 * 4)  # 2 batches, 4 passes each
    fast, whole = results[True], results[False]
    assert np.array_equal(fast.passes, whole.passes)
    assert 0 < fast.probability.mean() < 1 and not np.all(np.isin(fast.probability, (0.0, 1.0)))
    assert fast.entropy is not None and whole.entropy is not None
    assert np.array_equal(fast.entropy.epistemic, whole.entropy.epistemic)
