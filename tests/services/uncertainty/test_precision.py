"""The number format of the uncertainty stage's model passes (services/uncertainty/precision.py)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from neuron_atlas_client.options import PipelineOptions
from neuron_core.hooks import ActivationReader
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty import precision
from services.uncertainty.ablation import AblatedModel

CPU = torch.device("cpu")


def _cpu_has_bfloat16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bfloat16_only_where_the_cpu_computes_it(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    _cpu_has_bfloat16(monkeypatch, native)
    assert PipelineOptions().pass_precision == "auto"
    expected = torch.bfloat16 if native else torch.float32
    assert precision.pass_dtype("auto", CPU) == expected
    # an explicit choice is obeyed either way
    assert precision.pass_dtype("float32", CPU) == torch.float32
    assert precision.pass_dtype("bfloat16", CPU) == torch.bfloat16


def test_auto_stays_float32_on_devices_without_a_known_bfloat16_path() -> None:
    assert precision.pass_dtype("auto", torch.device("mps")) == torch.float32


def _resnet() -> tuple[torch.nn.Module, list[LayerInfo]]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    layers, offset = [], 0
    for name, channels in (("layer2", 128), ("layer4", 512)):
        layers.append(LayerInfo(name, channels, offset))
        offset += channels
    return model, layers


def test_bfloat16_ablation_passes_return_float32_logits_close_to_float32() -> None:
    model, layers = _resnet()
    images = torch.randn(4, 3, 64, 64)
    keep = torch.ones(4, 640)
    keep[:, :20] = 0.0
    logits = {}
    for dtype in (torch.float32, torch.bfloat16):
        ablated = AblatedModel(model, layers, dtype=dtype)
        try:
            logits[dtype] = ablated.logits(ablated.starts(images), keep)
        finally:
            ablated.close()
    assert logits[torch.bfloat16].dtype == torch.float32
    scale = logits[torch.float32].abs().max()
    assert (logits[torch.bfloat16] - logits[torch.float32]).abs().max() < 0.05 * scale
    assert not torch.equal(logits[torch.bfloat16], logits[torch.float32])  # it did run in bfloat16


def test_a_bfloat16_pass_is_pooled_in_float32() -> None:
    """Pooling rounds nothing: the mean of a bfloat16 map is summed in float32 (a bfloat16 mean
    keeps 3 digits, and neighbours near the top-10% threshold would tie)."""
    model, layers = _resnet()
    maps: list[torch.Tensor] = []
    probe = dict(model.named_modules())["layer4"].register_forward_hook(lambda _m, _i, out: maps.append(out))
    reader = ActivationReader(model, [layer.name for layer in layers])
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pooled = reader.read(torch.randn(2, 3, 64, 64))
    finally:
        reader.close()
        probe.remove()
    assert maps[0].dtype == torch.bfloat16 and pooled.dtype == torch.float32
    exact = maps[0].float().mean(dim=(2, 3))
    assert torch.allclose(pooled[:, 128:], exact, rtol=1e-6, atol=1e-7)
