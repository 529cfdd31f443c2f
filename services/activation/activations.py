"""Pooled layer activations and per-image active sets.

A neuron is one channel of a selected layer; its activation for an image is the spatial mean of
its feature map, taken inside a forward hook so only one float per channel is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from shared.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224


@dataclass(frozen=True)
class LayerInfo:
    name: str
    channels: int
    offset: int  # first column of this layer in the neuron axis


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


def _pool(output: torch.Tensor) -> torch.Tensor:
    """One value per channel: mean over space (N,C,H,W) or tokens (N,T,C)."""
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        return output.mean(dim=1)
    if output.ndim == 2:
        return output
    raise InputError(f"Layer output of shape {tuple(output.shape)} has no channel axis to pool.")


class ActivationReader:
    """Forward hooks on named modules that keep the pooled activations of the last batch."""

    def __init__(self, module: nn.Module, layers: Sequence[str]) -> None:
        self.module = module
        self.layers = list(layers)
        self._pooled: dict[str, torch.Tensor] = {}
        self._reading = False  # hooks record only inside read(), not in other passes of the model
        modules = dict(module.named_modules())
        self._handles = [modules[name].register_forward_hook(self._hook_for(name)) for name in self.layers]

    def _hook_for(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not self._reading:
                return
            if name in self._pooled:
                # A module that runs twice per pass (torchvision's shared in-place ReLU) would be
                # counted twice and read after later in-place changes.
                raise InputError(
                    f"Layer {name!r} runs more than once per forward pass.",
                    "Choose the block that contains it instead (e.g. layer1.0, not layer1.0.relu).",
                )
            tensor = output[0] if isinstance(output, tuple) else output
            if not isinstance(tensor, torch.Tensor):
                raise InputError(f"Layer {name!r} does not output a tensor.")
            self._pooled[name] = _pool(tensor.detach()).float()

        return hook

    @torch.inference_mode()
    def read(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled activations (N, total channels), layers side by side in the order given."""
        return torch.cat([pooled for pooled in self._pass(batch).values()], dim=1)

    def _pass(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self._pooled.clear()
        self._reading = True
        try:
            self.module(batch)
        finally:
            self._reading = False
        missing = [name for name in self.layers if name not in self._pooled]
        if missing:
            raise InputError(
                f"Layer(s) {', '.join(missing)} did not run in the forward pass.",
                "Choose modules that the model's forward pass uses.",
            )
        return {name: self._pooled[name] for name in self.layers}

    def layer_infos(self, device: torch.device) -> list[LayerInfo]:
        """Channel counts from one pass over a blank image."""
        pooled_by_layer = self._probe(device)
        infos, offset = [], 0
        for name in self.layers:
            channels = int(pooled_by_layer[name].shape[1])
            infos.append(LayerInfo(name, channels, offset))
            offset += channels
        return infos

    @torch.inference_mode()
    def _probe(self, device: torch.device) -> dict[str, torch.Tensor]:
        return self._pass(torch.zeros(1, 3, CROP, CROP, device=device))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
    """ImageNet evaluation transform: resize shorter side to 256, centre crop 224, normalise."""
    arrays = np.empty((len(images), CROP, CROP, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        width, height = image.size
        scale = RESIZE / min(width, height)
        size = (max(CROP, round(width * scale)), max(CROP, round(height * scale)))
        resized = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
        arrays[i] = np.asarray(resized.crop((left, top, left + CROP, top + CROP)))
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std).contiguous()


def active_count(channels: int, top_fraction: float) -> int:
    """How many of `channels` neurons are active: round(fraction * channels), at least 1."""
    return max(1, min(channels, math.floor(top_fraction * channels + 0.5)))


def _top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k as a mask; ties at the threshold go to the lowest channel index."""
    n, width = values.shape
    if k >= width:
        return np.ones((n, width), dtype=bool)
    kth = np.partition(values, width - k, axis=1)[:, width - k][:, None]
    above = values > kth
    needed = k - above.sum(axis=1, keepdims=True)
    tied = values == kth
    return above | (tied & (np.cumsum(tied, axis=1) <= needed))


def active_mask(
    pooled: np.ndarray, layers: Sequence[LayerInfo], top_fraction: float, ranking: str
) -> np.ndarray:
    """Bool (images, neurons): each image's top `top_fraction` per layer, or over all layers."""
    values = np.asarray(pooled, dtype=np.float32)
    if ranking == "global":
        return _top_k_mask(values, active_count(values.shape[1], top_fraction))
    if ranking != "per_layer":
        raise InputError(f"Unknown ranking {ranking!r}.", "Use per_layer or global.")
    mask = np.empty(values.shape, dtype=bool)
    for layer in layers:
        cols = slice(layer.offset, layer.offset + layer.channels)
        mask[:, cols] = _top_k_mask(values[:, cols], active_count(layer.channels, top_fraction))
    return mask


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Active sets as bitsets, 8 neurons a byte (design §3 `active bitsets`)."""
    return np.packbits(mask, axis=1)


def unpack_mask(bits: np.ndarray, n_neurons: int) -> np.ndarray:
    return np.unpackbits(bits, axis=1, count=n_neurons).astype(bool)


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
