import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neuron_atlas_client.errors import InputError
from neuron_core import hooks
from neuron_core.active_sets import active_count, active_mask, pack_mask, unpack_mask
from neuron_core.layers import resolve_layers
from neuron_core.neuron_axis import LayerInfo


def layers(*channels: int) -> list[LayerInfo]:
    out, offset = [], 0
    for i, c in enumerate(channels):
        out.append(LayerInfo(f"l{i}", c, offset))
        offset += c
    return out


def test_top_fraction_per_layer_marks_the_highest_channels_of_each_layer():
    pooled = np.array([[0.1, 0.9, 0.5, 0.3, 7.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    # layer 0 has 4 channels, layer 1 has 6: top 0.5 -> 2 and 3 active
    mask = active_mask(pooled, layers(4, 6), top_fraction=0.5, ranking="per_layer")
    assert np.flatnonzero(mask[0]).tolist() == [1, 2, 4, 8, 9]


def test_global_ranking_ranks_all_selected_neurons_together():
    pooled = np.array([[0.1, 0.9, 0.5, 0.3, 7.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    mask = active_mask(pooled, layers(4, 6), top_fraction=0.3, ranking="global")
    assert np.flatnonzero(mask[0]).tolist() == [4, 8, 9]


def test_ties_at_the_threshold_go_to_the_lowest_channel_index():
    pooled = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    mask = active_mask(pooled, layers(5), top_fraction=0.4, ranking="per_layer")
    assert np.flatnonzero(mask[0]).tolist() == [1, 2]
    assert np.flatnonzero(mask[1]).tolist() == [0, 1]


def test_every_image_gets_exactly_k_active_neurons_per_layer():
    rng = np.random.default_rng(0)
    pooled = rng.integers(0, 4, size=(300, 64 + 128)).astype(np.float32)  # many ties
    mask = active_mask(pooled, layers(64, 128), 0.1, "per_layer")
    assert (mask[:, :64].sum(axis=1) == 6).all()
    assert (mask[:, 64:].sum(axis=1) == 13).all()


def test_active_count_rounds_and_keeps_at_least_one():
    assert active_count(64, 0.1) == 6
    assert active_count(512, 0.1) == 51
    assert active_count(5, 0.01) == 1
    assert active_count(10, 1.0) == 10


def test_bitsets_round_trip():
    mask = np.random.default_rng(1).random((7, 13)) < 0.3
    assert (unpack_mask(pack_mask(mask), 13) == mask).all()


class TwoConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(x))
        y = self.relu(y)  # the same module twice, as torchvision's BasicBlock does
        return self.head(y.mean(dim=(2, 3)))


def test_reader_pools_the_spatial_mean_of_each_channel():
    model = TwoConv().eval()
    x = torch.randn(2, 3, 16, 16)
    reader = hooks.ActivationReader(model, ["conv"])
    pooled = reader.read(x)
    assert torch.allclose(pooled, model.conv(x).mean(dim=(2, 3)), atol=1e-6)
    assert reader.layer_infos(torch.device("cpu")) == [LayerInfo("conv", 4, 0)]
    reader.close()


def test_a_module_that_runs_twice_per_pass_is_refused():
    reader = hooks.ActivationReader(TwoConv().eval(), ["relu"])
    with pytest.raises(InputError, match="more than once"):
        reader.read(torch.randn(1, 3, 8, 8))


def test_unknown_layers_get_an_error_listing_valid_names():
    with pytest.raises(InputError) as err:
        resolve_layers(TwoConv(), ["conv", "nope"])
    assert "'nope'" in err.value.problem and "conv" in err.value.fix and "head" in err.value.fix


def test_resnet_default_layers_are_the_residual_stages():
    import torchvision

    assert resolve_layers(torchvision.models.resnet18(), None) == ["layer1", "layer2", "layer3", "layer4"]


def test_preprocess_resizes_crops_and_normalises():
    images = [Image.new("RGB", (300, 200), (255, 0, 0)), Image.new("RGB", (50, 90), (0, 0, 0))]
    batch = hooks.preprocess(images)
    assert batch.shape == (2, 3, 224, 224)
    red = (1.0 - hooks.IMAGENET_MEAN[0]) / hooks.IMAGENET_STD[0]
    assert torch.allclose(batch[0, 0], torch.full((224, 224), red), atol=1e-5)
