"""The neuron axis: the read layers' channels side by side, one column per neuron, in the order
the layers are read (every array of activity and every group indexes neurons by it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
