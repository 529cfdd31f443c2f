"""neuron_core.instrumented: the one place that hooks a model, and what its hooks do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from neuron_atlas_client.errors import InputError
from neuron_core.instrumented import InstrumentedModel, pool_channels
from neuron_core.neuron_axis import stack_layers

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("neuron_core", "services", "shared", "neuron_atlas")
HOOKING = re.compile(r"register_(module_)?forward_(pre_)?hook")


def hooked_modules() -> dict[str, int]:
    """Product modules that register forward hooks, with how many times."""
    found: dict[str, int] = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            count = len(HOOKING.findall(path.read_text(encoding="utf-8")))
            if count:
                found[path.relative_to(ROOT).as_posix()] = count
    return found


def test_only_the_instrumented_model_registers_forward_hooks() -> None:
    found = hooked_modules()
    assert "neuron_core/instrumented.py" in found  # the search sees the hooks where they are
    others = sorted(set(found) - {"neuron_core/instrumented.py"})
    assert not others, f"forward hooks outside neuron_core/instrumented.py (use InstrumentedModel): {others}"


def net() -> nn.Sequential:
    torch.manual_seed(0)
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)]
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), *head).eval()


def hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_retain_pools_each_named_layer_inside_run_only() -> None:
    model, images = net(), torch.randn(5, 3, 12, 12)
    with InstrumentedModel(model) as instrumented:
        instrumented.retain(["0", "2"])
        model(images)  # a pass outside run() records nothing, so run() below sees each layer once
        pooled = instrumented.run(images)
        first = model[0](images)
        assert list(pooled) == ["0", "2"]
        torch.testing.assert_close(pooled["0"], first.mean(dim=(2, 3)))
        torch.testing.assert_close(pooled["2"], model[2](model[1](first)).mean(dim=(2, 3)))
        torch.testing.assert_close(instrumented.output, model(images))
    assert hook_count(model) == 0


def test_a_retained_layer_that_runs_twice_or_not_at_all_is_refused() -> None:
    relu = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 3, 1), relu, nn.Conv2d(3, 3, 1), relu).eval()
    with InstrumentedModel(twice) as instrumented:
        instrumented.retain(["1"])
        with pytest.raises(InputError, match="more than once"):
            instrumented.run(torch.randn(2, 3, 4, 4))
    model = net()
    with InstrumentedModel(model) as instrumented:
        instrumented.retain(["2"])
        with pytest.raises(InputError, match="did not run"):
            instrumented.run(torch.randn(2, 3, 8, 8), forward=model[0])
    assert hook_count(twice) == hook_count(model) == 0


def test_zero_keep_and_per_row_masks_change_only_their_channels() -> None:
    model, images = net(), torch.randn(3, 3, 10, 10)
    base = model[0](images)
    instrumented = InstrumentedModel(model)
    with instrumented.zero_channels("0", [1, 3]):
        zeroed = model[0](images)
    with instrumented.keep_channels("0", [1, 3]):
        kept = model[0](images)
    torch.testing.assert_close(zeroed + kept, base)
    assert zeroed[:, [1, 3]].abs().sum() == 0 and kept[:, [0, 2]].abs().sum() == 0
    assert zeroed[:, [0, 2]].abs().sum() > 0 and kept[:, [1, 3]].abs().sum() > 0

    layers = stack_layers(["0", "2"], [4, 6])
    mask = instrumented.mask_channels(layers)
    torch.testing.assert_close(model[0](images), base)  # off until a mask is set
    mask.keep = torch.ones(3, 10)
    mask.keep[0, 0] = 0.0  # image 0 loses channel 0 of layer "0"
    mask.keep[2, 4 + 5] = 0.0  # image 2 loses channel 5 of layer "2"
    masked = model[0](images)
    assert masked[0, 0].abs().sum() == 0
    torch.testing.assert_close(masked[1:], base[1:])
    torch.testing.assert_close(masked[0, 1:], base[0, 1:])
    assert model[2](masked)[2, 5].abs().sum() == 0
    instrumented.close()
    assert hook_count(model) == 0
    torch.testing.assert_close(model[0](images), base)


def test_an_input_edit_changes_what_the_layer_sees() -> None:
    model, images = net(), torch.randn(2, 3, 8, 8)
    base, expected = model[0](images), model[0](images * 2.0)
    with InstrumentedModel(model).edit("0", lambda x: x * 2.0, at_input=True):
        torch.testing.assert_close(model[0](images), expected)
    torch.testing.assert_close(model[0](images), base)
    assert hook_count(model) == 0


def test_hooks_come_off_when_a_pass_fails() -> None:
    model = net()

    def broken(_output: object) -> object:
        raise RuntimeError("an edit that fails")

    with pytest.raises(RuntimeError, match="an edit that fails"), InstrumentedModel(model) as instrumented:
        instrumented.retain(["0"])
        instrumented.watch(["2"], lambda *_: None)
        instrumented.edit("2", broken)
        instrumented.run(torch.randn(2, 3, 8, 8))
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError), InstrumentedModel(model).edit("0", broken):
        model(torch.randn(2, 3, 8, 8))
    assert hook_count(model) == 0


def test_removing_one_registration_leaves_the_others() -> None:
    model, images = net(), torch.randn(2, 3, 8, 8)
    seen: list[str] = []
    instrumented = InstrumentedModel(model)
    instrumented.retain(["0"])
    later = instrumented.retain(["2"])
    watching = instrumented.watch(["0", "2"], lambda name, _out: seen.append(name))
    instrumented.remove(later)
    assert list(instrumented.run(images)) == ["0"]  # a removed layer is no longer retained
    assert seen == ["0", "2"]
    watching.remove()
    watching.remove()  # again: nothing
    instrumented.run(images)
    assert seen == ["0", "2"]
    instrumented.close()
    assert hook_count(model) == 0


def test_stop_at_returns_a_layer_output_or_input_without_running_the_rest() -> None:
    model, images = net(), torch.randn(2, 3, 8, 8)
    ran: list[str] = []
    instrumented = InstrumentedModel(model)
    instrumented.watch(["5"], lambda name, _out: ran.append(name))
    start = instrumented.stop_at("2", images)
    assert start is not None
    torch.testing.assert_close(start, model[2](model[1](model[0](images))))
    before = instrumented.stop_at("2", images, at_input=True)
    assert before is not None
    torch.testing.assert_close(before, model[1](model[0](images)))
    assert ran == []  # the head never ran
    instrumented.close()
    assert hook_count(model) == 0


def test_an_unknown_layer_is_a_clear_error_and_leaves_no_hook() -> None:
    model = net()
    instrumented = InstrumentedModel(model)
    with pytest.raises(InputError, match="no module 'layer9'"):
        instrumented.retain(["0", "layer9"])
    with pytest.raises(InputError, match="no module 'layer9'"):
        instrumented.watch(["0", "layer9"], lambda *_: None)
    with pytest.raises(InputError, match="no module 'layer9'"):
        instrumented.mask_channels(stack_layers(["0", "layer9"], [4, 6]))
    assert hook_count(model) == 0


def test_token_layers_lose_the_channels_they_pool() -> None:
    """A token layer (images, tokens, channels) pools its channels on the last axis; zeroing or
    masking a channel must zero that axis in every token. The mask once multiplied axis 1: with
    as many tokens as channels it zeroed tokens and left the pooled channel as it was."""
    from tests.tiny_models import TOKEN_CHANNELS, token_net

    model = token_net()
    tokens = model.patch(torch.randn(3, 3, 32, 32)).flatten(2).transpose(1, 2)
    base = model.block1(tokens)
    instrumented = InstrumentedModel(model)
    with instrumented.zero_channels("block1", [2, 5]):
        zeroed = model.block1(tokens)
    with instrumented.keep_channels("block1", [2, 5]):
        kept = model.block1(tokens)
    assert zeroed[..., [2, 5]].abs().sum() == 0 and kept[..., [0, 1, 3, 4]].abs().sum() == 0
    torch.testing.assert_close(zeroed + kept, base)
    assert pool_channels(zeroed)[:, [2, 5]].abs().sum() == 0  # the pooled neurons are the ones zeroed

    layers = stack_layers(["block1", "block2"], [TOKEN_CHANNELS, TOKEN_CHANNELS])
    mask = instrumented.mask_channels(layers)
    mask.keep = torch.ones(3, 2 * TOKEN_CHANNELS)
    mask.keep[0, 7] = 0.0  # image 0 loses channel 7 of block1
    masked = model.block1(tokens)
    assert masked[0, :, 7].abs().sum() == 0
    torch.testing.assert_close(masked[0, :, :7], base[0, :, :7])
    torch.testing.assert_close(masked[1:], base[1:])
    instrumented.close()
    assert hook_count(model) == 0
