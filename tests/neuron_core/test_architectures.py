"""Any torchvision or timm architecture: names, close matches, the model's own preprocessing,
strict loading that names what differs, the head's size read off the file, and the `layers`
command."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from neuron_atlas.cli import main as cli_main
from neuron_atlas_client.errors import InputError
from neuron_core.architectures import Architecture
from neuron_core.layers import resolve_layers
from neuron_core.target_model import load_target_model
from neuron_core.weights_check import WeightsMismatch


def test_names_pick_the_zoo_and_a_bare_name_stays_torchvision() -> None:
    assert Architecture.parse("resnet18") == Architecture("torchvision", "resnet18")
    assert Architecture.parse("torchvision:resnet50") == Architecture("torchvision", "resnet50")
    assert str(Architecture.parse("timm:convnext_tiny")) == "timm:convnext_tiny"
    assert str(Architecture.parse("torchvision:resnet18")) == "resnet18"


@pytest.mark.parametrize(
    ("name", "close"),
    [("timm:convnext_tinyy", "timm:convnext_tiny"), ("resnt18", "torchvision:resnet18")],
)
def test_an_unknown_architecture_names_the_close_matches(name: str, close: str) -> None:
    with pytest.raises(InputError) as err:
        Architecture.parse(name)
    assert close in err.value.fix


def test_an_unknown_zoo_says_which_exist() -> None:
    with pytest.raises(InputError, match="Unknown model zoo 'keras'"):
        Architecture.parse("keras:resnet50")


def test_preprocessing_comes_from_the_models_own_config() -> None:
    convnext = Architecture.parse("timm:convnext_tiny")
    prep = convnext.preprocessing(convnext.build())
    assert (prep.input_size, prep.resize, prep.interpolation) == (224, 235, "bicubic")  # crop_pct 0.95
    resnet50 = Architecture.parse("resnet50")
    assert resnet50.preprocessing(resnet50.build()).resize == 232  # its V2 weights' transform
    resnet18 = Architecture.parse("resnet18")
    assert resnet18.preprocessing(resnet18.build()).resize == 256


def test_a_timm_checkpoint_loads_strictly_with_its_head_size_read_off_the_file(tmp_path) -> None:
    path = tmp_path / "convnext.safetensors"
    save_file(timm.create_model("test_convnext", num_classes=7).state_dict(), str(path))
    loaded = load_target_model("timm:test_convnext", str(path))
    assert loaded.record().num_classes == 7 and loaded.source == "file" and loaded.sha256
    with pytest.raises(WeightsMismatch) as err:
        load_target_model("timm:test_convnext", str(path), num_classes=5)  # told otherwise
    assert [key for key, _, _ in err.value.mismatched] == ["head.fc.weight", "head.fc.bias"]
    assert "head.fc.weight: model [5, " in err.value.problem


def test_a_mismatch_names_missing_unexpected_and_reshaped_tensors(tmp_path) -> None:
    state = tvm.resnet18(weights=None).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    state["layer2.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsMismatch) as err:
        load_target_model("resnet18", str(path))
    assert err.value.missing == ["layer1.0.conv1.weight"]
    assert err.value.unexpected == ["extra.weight"]
    assert err.value.mismatched == [("layer2.0.conv1.weight", (128, 64, 3, 3), (1, 1, 1, 1))]


def test_an_unknown_layer_names_the_close_matches() -> None:
    with pytest.raises(InputError) as err:
        resolve_layers(tvm.resnet18(weights=None), ["layer5", "layr1"])
    assert "layer1" in err.value.fix and "neuron-atlas layers" in err.value.fix


def test_layers_command_lists_readable_layers_with_channels(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["layers", "timm:test_convnext"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    defaults = [fields[0] for fields in lines if fields[-1] == "default"]
    assert defaults == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert cli_main(["layers", "resnet18", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    by_name = {layer["name"]: layer for layer in document["layers"]}
    assert by_name["layer4"] == {"name": "layer4", "channels": 512, "default": True}
    assert "layer1.0.relu" not in by_name  # torchvision's shared ReLU runs twice per pass


def test_layers_command_refuses_an_unknown_model_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["layers", "timm:convnext_tinyy"]) == 2
    assert "timm:convnext_tiny" in capsys.readouterr().err
