"""Reading pooled activations, and the ImageNet evaluation transform.

A neuron is one channel of a selected layer; its activation for an image is the spatial mean of
its feature map, taken inside a forward hook (neuron_core.instrumented) so only one float per
channel is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuron_atlas_client.contracts.models import IMAGENET_EVAL, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from neuron_core.instrumented import InstrumentedModel
from neuron_core.neuron_axis import LayerInfo, stack_layers

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ActivationReader", "crops", "normalise", "preprocess"]
RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class ActivationReader:
    """The pooled activations of named layers, one batch at a time: hooks that pool inside the
    hook (`InstrumentedModel.retain`), on the model until `close` or the end of `with`."""

    def __init__(self, module: nn.Module, layers: Sequence[str]) -> None:
        self.module = module
        self.layers = list(layers)
        self.instrumented = InstrumentedModel(module)
        self.instrumented.retain(self.layers)

    @property
    def output(self) -> object:
        """What the last pass returned (the logits of a classifier): the activation pass runs the
        whole model, so its predictions come free (services.activation.input_check reads them)."""
        return self.instrumented.output

    @torch.inference_mode()
    def read(
        self, batch: torch.Tensor, forward: Callable[[torch.Tensor], object] | None = None
    ) -> torch.Tensor:
        """Pooled activations (N, total channels), layers side by side in the order given.
        `forward` runs the pass instead of the model (a part of it that calls the same modules,
        from an input further in: neuron_core.read_layer_start)."""
        return torch.cat([pooled for pooled in self.instrumented.run(batch, forward).values()], dim=1)

    def layer_infos(
        self, device: torch.device, input_size: int = IMAGENET_EVAL.input_size
    ) -> list[LayerInfo]:
        """Channel counts from one pass over a blank image."""
        pooled_by_layer = self._probe(device, input_size)
        return stack_layers(self.layers, [int(pooled_by_layer[name].shape[1]) for name in self.layers])

    @torch.inference_mode()
    def _probe(self, device: torch.device, input_size: int) -> dict[str, torch.Tensor]:
        return self.instrumented.run(torch.zeros(1, 3, input_size, input_size, device=device))

    def predicted(self) -> torch.Tensor | None:
        """Top-1 class of each image of the last pass, or None where the model's output is not a
        (images, classes) tensor (a model cut short, or one that returns a structure)."""
        output = self.output[0] if isinstance(self.output, tuple) and self.output else self.output
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            return None
        return output.argmax(dim=1)

    def close(self) -> None:
        self.instrumented.close()

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
