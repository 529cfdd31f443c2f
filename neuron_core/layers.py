"""Which modules of a target model are read, and where each layer's neurons sit in the neuron axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from shared.errors import InputError


@dataclass(frozen=True)
class LayerInfo:
    name: str
    channels: int
    offset: int  # first column of this layer in the neuron axis


def stack_layers(names: Sequence[str], channels: Sequence[int]) -> list[LayerInfo]:
    """Layers side by side in the neuron axis, in the order given."""
    infos, offset = [], 0
    for name, count in zip(names, channels, strict=True):
        infos.append(LayerInfo(str(name), int(count), offset))
        offset += int(count)
    return infos


def default_layers(module: nn.Module) -> list[str]:
    """The output of each residual stage (ResNet-style `layer1`..`layerN`)."""
    names = [name for name, _ in module.named_children() if name.startswith("layer")]
    if not names:
        raise InputError(
            f"{type(module).__name__} has no residual stages to read by default.",
            "Choose layers with --layers; valid names: " + _some_module_names(module),
        )
    return names


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
        raise InputError(
            f"Unknown layer(s) {', '.join(map(repr, unknown))}.",
            "Valid module names: " + _some_module_names(module, limit=200),
        )
    if len(set(layers)) != len(layers):
        raise InputError("A layer is named twice in --layers.", "Name each layer once.")
    return list(layers)
