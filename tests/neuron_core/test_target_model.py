import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from neuron_atlas_client.errors import InputError, ModelLoadError
from neuron_core.target_model import load_target_model


@pytest.fixture(scope="module")
def resnet18_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, state


def test_safetensors_state_dict_is_loaded_into_the_named_architecture(resnet18_state):
    path, state = resnet18_state
    loaded = load_target_model("resnet18", weights=str(path))
    assert loaded.weights == "file resnet18.safetensors"
    assert torch.equal(loaded.module.state_dict()["fc.weight"], state["fc.weight"])
    assert not loaded.module.training


def test_a_state_dict_for_another_architecture_is_refused_with_what_to_do(resnet18_state):
    path, _ = resnet18_state
    with pytest.raises(ModelLoadError) as err:
        load_target_model("resnet34", weights=str(path))
    assert "does not fit resnet34" in err.value.problem
    assert "--model" in err.value.fix


def test_pickled_weights_are_never_unpickled(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"fc.weight": [1, 2, 3]}))
    with pytest.raises(ModelLoadError, match="pickled PyTorch checkpoint, not safetensors"):
        load_target_model("resnet18", weights=str(path))


def test_missing_weights_file_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_target_model("resnet18", weights=str(tmp_path / "nope.safetensors"))


def test_unknown_architecture_is_named_with_alternatives():
    with pytest.raises(InputError) as err:
        load_target_model("resnet19")
    assert "resnet19" in err.value.problem and "resnet18" in err.value.fix


def test_imagenet_weights_are_read_from_the_torch_cache(tmp_path, resnet18_state):
    _, state = resnet18_state
    name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1]
    torch.save(state, tmp_path / name)
    loaded = load_target_model("resnet18", cache_dir=tmp_path)
    assert "IMAGENET1K_V1" in loaded.weights
    assert torch.equal(loaded.module.state_dict()["conv1.weight"], state["conv1.weight"])


def test_without_weights_random_ones_need_explicit_permission(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_target_model("resnet18", cache_dir=tmp_path)
    assert str(tmp_path) in err.value.problem and "--allow-random-weights" in err.value.fix
    loaded = load_target_model("resnet18", cache_dir=tmp_path, allow_random_weights=True, seed=5)
    again = load_target_model("resnet18", cache_dir=tmp_path, allow_random_weights=True, seed=5)
    assert loaded.weights.startswith("random (seed 5")
    assert torch.equal(loaded.module.state_dict()["fc.weight"], again.module.state_dict()["fc.weight"])


def test_on_a_cpu_the_target_model_runs_channels_last_with_the_same_outputs(tmp_path):
    """oneDNN runs channels-last convolutions and pooling faster (ResNet18: 16% less time, its
    max-pool a quarter); the arithmetic is the same, so outputs agree to float rounding."""
    from neuron_atlas_client.options import PipelineOptions
    from neuron_core.target_model import TargetSpec, target_model

    options = PipelineOptions(allow_random_weights=True, device="cpu", seed=3)
    loaded = target_model(TargetSpec.of(options, cache_dir=tmp_path))
    assert loaded.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    plain = load_target_model("resnet18", allow_random_weights=True, cache_dir=tmp_path, seed=3).module
    assert not plain.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(loaded.module(images), plain(images), rtol=1e-4, atol=1e-5)
