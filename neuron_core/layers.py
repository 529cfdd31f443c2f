"""Which modules of a target model are read, and where each layer's neurons sit in the neuron axis."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import torch
from torch import nn

from neuron_atlas_client.errors import InputError
from neuron_core.instrumented import InstrumentedModel
from neuron_core.neuron_axis import LayerInfo, stack_layers

# Where each family keeps its stages, first match wins: ResNet's layer1..4; timm's `stages`
# (ConvNeXt, ...), `s1..s4` (RegNet) and `blocks` (ViT, EfficientNet, MobileNet); torchvision's
# `trunk_output` (RegNet), `encoder.layers` (ViT) and `features` (ConvNeXt, EfficientNet, VGG, ...).
_STAGE_PATTERNS = (r"layer\d+", r"s\d+")
_STAGE_CONTAINERS = ("stages", "blocks", "trunk_output", "encoder.layers", "features")


def default_layers(module: nn.Module) -> list[str]:
    """The output of each stage of the network (ResNet-style `layer1`..`layerN` and the like)."""
    children = [name for name, _ in module.named_children()]
    for pattern in _STAGE_PATTERNS:
        names = [name for name in children if re.fullmatch(pattern, name)]
        if names:
            return names
    modules = dict(module.named_modules())
    for container in _STAGE_CONTAINERS:
        parent = modules.get(container)
        if parent is None:
            continue
        names = [
            f"{container}.{name}"
            for name, child in parent.named_children()
            if any(True for _ in child.parameters())  # stages, not activations or pooling
        ]
        if names:
            return names
    raise InputError(
        f"{type(module).__name__} has no stages to read by default.",
        "Choose layers with --layers (`neuron-atlas layers MODEL` lists them); valid names: "
        + _some_module_names(module),
    )


def readable_layers(module: nn.Module, input_size: int, device: torch.device) -> list[LayerInfo]:
    """Modules a job can read: each runs once per forward pass and outputs a tensor with a
    channel axis; with their channel counts, from one pass over a blank image."""
    calls: dict[str, int] = {}
    channels: dict[str, int] = {}

    def count(name: str, output: object) -> None:
        calls[name] = calls.get(name, 0) + 1
        tensor = output[0] if isinstance(output, tuple) else output
        if isinstance(tensor, torch.Tensor) and 2 <= tensor.ndim <= 4:
            channels[name] = int(tensor.shape[1] if tensor.ndim in (2, 4) else tensor.shape[2])

    every = [name for name, _ in module.named_modules() if name]
    with InstrumentedModel(module).watch(every, count), torch.inference_mode():
        module.eval()(torch.zeros(1, 3, input_size, input_size, device=device))
    names = [name for name in every if calls.get(name) == 1 and name in channels]
    return stack_layers(names, [channels[name] for name in names])


def _some_module_names(module: nn.Module, limit: int = 40) -> str:
    names = [name for name, _ in module.named_modules() if name]
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def resolve_layers(module: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """Check module names against the model; unknown ones get an error listing the valid ones."""
    if not layers:
        return default_layers(module)
    known = dict(module.named_modules())
    unknown = [name for name in layers if name not in known or not name]
    if unknown:
        close = [m for name in unknown for m in difflib.get_close_matches(name, list(known), n=3)]
        hint = f"Close matches: {', '.join(dict.fromkeys(close))}. " if close else ""
        raise InputError(
            f"Unknown layer(s) {', '.join(map(repr, unknown))}.",
            f"{hint}`neuron-atlas layers MODEL` lists the readable ones; valid module names: "
            + _some_module_names(module, limit=200),
        )
    if len(set(layers)) != len(layers):
        raise InputError("A layer is named twice in --layers.", "Name each layer once.")
    return list(layers)
