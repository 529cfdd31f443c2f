"""Forward hooks that pool inside the hook, and the ImageNet evaluation transform.

A neuron is one channel of a selected layer; its activation for an image is the spatial mean of
its feature map, taken inside a forward hook so only one float per channel is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuron_atlas_client.contracts.models import IMAGENET_EVAL, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from neuron_atlas_client.errors import InputError
from neuron_core.layers import LayerInfo, stack_layers

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ActivationReader", "crops", "normalise", "preprocess"]
RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def _pool(output: torch.Tensor) -> torch.Tensor:
    """One value per channel: mean over space (N,C,H,W) or tokens (N,T,C), summed in float32 (a
    bfloat16 pass would otherwise round the mean to three digits and tie near the top 10%)."""
    if output.ndim == 4:
        return output.mean(dim=(2, 3), dtype=torch.float32)
    if output.ndim == 3:
        return output.mean(dim=1, dtype=torch.float32)
    if output.ndim == 2:
        return output.float()
    raise InputError(f"Layer output of shape {tuple(output.shape)} has no channel axis to pool.")


class ActivationReader:
    """Forward hooks on named modules that keep the pooled activations of the last batch."""

    def __init__(self, module: nn.Module, layers: Sequence[str]) -> None:
        self.module = module
        self.layers = list(layers)
        self._pooled: dict[str, torch.Tensor] = {}
        # What the last pass returned (the logits of a classifier): the activation pass runs the
        # whole model, so its predictions come free (services.activation.input_check reads them).
        self.output: object = None
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
    def read(
        self, batch: torch.Tensor, forward: Callable[[torch.Tensor], object] | None = None
    ) -> torch.Tensor:
        """Pooled activations (N, total channels), layers side by side in the order given.
        `forward` runs the pass instead of the model (a part of it that calls the same modules,
        from an input further in: neuron_core.read_layer_start)."""
        return torch.cat([pooled for pooled in self._pass(batch, forward).values()], dim=1)

    def _pass(
        self, batch: torch.Tensor, forward: Callable[[torch.Tensor], object] | None = None
    ) -> dict[str, torch.Tensor]:
        self._pooled.clear()
        self._reading = True
        try:
            self.output = (forward or self.module)(batch)
        finally:
            self._reading = False
        missing = [name for name in self.layers if name not in self._pooled]
        if missing:
            raise InputError(
                f"Layer(s) {', '.join(missing)} did not run in the forward pass.",
                "Choose modules that the model's forward pass uses.",
            )
        return {name: self._pooled[name] for name in self.layers}

    def layer_infos(
        self, device: torch.device, input_size: int = IMAGENET_EVAL.input_size
    ) -> list[LayerInfo]:
        """Channel counts from one pass over a blank image."""
        pooled_by_layer = self._probe(device, input_size)
        return stack_layers(self.layers, [int(pooled_by_layer[name].shape[1]) for name in self.layers])

    @torch.inference_mode()
    def _probe(self, device: torch.device, input_size: int) -> dict[str, torch.Tensor]:
        return self._pass(torch.zeros(1, 3, input_size, input_size, device=device))

    def predicted(self) -> torch.Tensor | None:
        """Top-1 class of each image of the last pass, or None where the model's output is not a
        (images, classes) tensor (a model cut short, or one that returns a structure)."""
        output = self.output[0] if isinstance(self.output, tuple) and self.output else self.output
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            return None
        return output.argmax(dim=1)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> ActivationReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()  # the model may be cached and reused: leave no hook behind


def preprocess(images: Sequence[Image.Image], prep: Preprocessing = IMAGENET_EVAL) -> torch.Tensor:
    """The evaluation transform (ResNet18's by default: resize the shorter side to 256, centre
    crop 224, normalise with ImageNet's mean and std)."""
    return normalise(crops(images, prep), prep)


def crops(images: Sequence[Image.Image], prep: Preprocessing = IMAGENET_EVAL) -> np.ndarray:
    """The transform's resized centre crops as uint8 (images, side, side, 3): a quarter of the
    memory of the normalised tensor, and exactly what `normalise` turns into it."""
    side, resize = prep.input_size, prep.resize
    arrays = np.empty((len(images), side, side, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        width, height = image.size
        scale = resize / min(width, height)
        size = (max(side, round(width * scale)), max(side, round(height * scale)))
        resized = image.resize(size, RESAMPLING[prep.interpolation], reducing_gap=3.0)
        left, top = (size[0] - side) // 2, (size[1] - side) // 2
        arrays[i] = np.asarray(resized.crop((left, top, left + side, top + side)))
    return arrays


def normalise(arrays: np.ndarray, prep: Preprocessing = IMAGENET_EVAL) -> torch.Tensor:
    """uint8 crops (images, H, W, 3) to the normalised float batch (images, 3, H, W)."""
    batch = torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std).contiguous()
