"""Model uncertainty and input sensitivity of the active sets, from stochastic passes.

- Model uncertainty: Monte Carlo dropout (Gal & Ghahramani 2016) keeps the model's dropout on at
  inference and runs T stochastic passes. It only says something when a dropout module with
  p > 0 runs before some selected layer (torchvision's VGG/AlexNet drop out in the classifier,
  after every conv feature; ViT/Swin carry Dropout(p=0), which adds no noise). Every other model
  gets dropout injected at test time on the input of each read layer (post-hoc dropout
  injection, Ledda et al. 2023), at a stated rate. The passes' class probabilities also give the
  predictive-entropy split into aleatoric and epistemic parts (entropy.py).
- Input sensitivity: test-time augmentation, a seeded horizontal flip, crop and small colour
  jitter per pass. It measures how the active sets move with the input, not what the model does
  not know, and is reported as such.

Each pass yields active sets; their mean is each image's probability that a neuron is active.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuron_core import hooks
from neuron_core.active_sets import active_mask
from neuron_core.groups import one_hot
from neuron_core.layers import LayerInfo
from neuron_core.read_layer_start import split_at_first_read_layer
from services.uncertainty.entropy import EntropySplit, decompose
from services.uncertainty.precision import autocast
from shared.contracts.models import IMAGENET_EVAL, Preprocessing

Method = Literal["mc_dropout", "injected_dropout", "tta"]
InputSource = Callable[[Sequence[int]], torch.Tensor]
"""The target model's normalised input batch for row indices of the job (`ModelInputs`)."""


def dropout_modules(module: nn.Module) -> list[nn.Module]:
    """Dropout modules that drop something: Dropout(p=0) (a ViT/Swin default) is no dropout."""
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and float(m.p) > 0.0]


def dropout_reaches_layers(
    module: nn.Module, layers: Sequence[str], device: torch.device, input_size: int = IMAGENET_EVAL.input_size
) -> bool:
    """Whether some dropout module runs before the last selected layer finishes (one probe pass)."""
    dropouts = dropout_modules(module)
    if not dropouts:
        return False
    calls: list[str] = []
    named = dict(module.named_modules())
    handles = [d.register_forward_hook(lambda *_: calls.append("dropout")) for d in dropouts]
    handles += [named[name].register_forward_hook(lambda *_: calls.append("layer")) for name in layers]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    last_layer = len(calls) - 1 - calls[::-1].index("layer")
    return "dropout" in calls[:last_layer]


def pick_method(
    module: nn.Module, layers: Sequence[str], device: torch.device, input_size: int = IMAGENET_EVAL.input_size
) -> Method:
    """The model's own dropout where it reaches the read layers, else injected dropout."""
    reaches = dropout_reaches_layers(module, layers, device, input_size)
    return "mc_dropout" if reaches else "injected_dropout"


@contextmanager
def injected_dropout(module: nn.Module, layers: Sequence[str], rate: float) -> Iterator[None]:
    """Dropout at `rate` on the input of each read layer (forward pre-hooks), for this block only."""

    def drop(_module: nn.Module, inputs: tuple[object, ...]) -> tuple[object, ...]:
        first = inputs[0]
        if not isinstance(first, torch.Tensor):
            return inputs
        return (F.dropout(first, rate, training=True), *inputs[1:])

    named = dict(module.named_modules())
    handles = [named[name].register_forward_pre_hook(drop) for name in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def dropout_on(module: nn.Module) -> Iterator[None]:
    """Dropout modules in training mode, everything else (batch norm) in eval mode."""
    was_training = module.training
    module.eval()
    for dropout in dropout_modules(module):
        dropout.train()
    try:
        yield
    finally:
        module.train(was_training)


def augment(
    batch: torch.Tensor, generator: torch.Generator, prep: Preprocessing = IMAGENET_EVAL
) -> torch.Tensor:
    """A mild test-time augmentation of a normalised batch: flip (p=0.5), a random crop of
    85-100% of the side resized back, brightness/contrast jitter of +-10%. Seeded by `generator`.
    Flip, crop and resize are one affine resampling of the whole batch."""
    n = batch.shape[0]
    device = batch.device
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    pixels = batch * std + mean
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    scale = 0.85 + 0.15 * torch.rand(n, generator=generator)
    shift = (1.0 - scale) * (2.0 * torch.rand(2, n, generator=generator) - 1.0)  # stays inside
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, 0, 2], theta[:, 1, 2] = shift[0], shift[1]
    grid = F.affine_grid(theta.to(device), list(batch.shape), align_corners=False)
    pixels = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    brightness = (1.0 + 0.2 * (torch.rand(n, generator=generator) - 0.5)).to(device).view(n, 1, 1, 1)
    contrast = (1.0 + 0.2 * (torch.rand(n, generator=generator) - 0.5)).to(device).view(n, 1, 1, 1)
    level = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = ((pixels * brightness - level) * contrast + level).clamp(0.0, 1.0)
    return (pixels - mean) / std


@dataclass(frozen=True)
class StochasticActivity:
    """Active sets of T stochastic passes, bool (T, images, neurons); for dropout passes, the
    per-image predictive-entropy split and the injected rate (None for the model's own)."""

    method: Method
    passes: np.ndarray
    entropy: EntropySplit | None = None
    dropout_rate: float | None = None

    @property
    def probability(self) -> np.ndarray:
        """Per image and neuron, the share of passes in which the neuron was active."""
        return self.passes.mean(axis=0, dtype=np.float32)


def stochastic_active_sets(
    module: nn.Module,
    layers: Sequence[LayerInfo],
    inputs: InputSource,
    n_images: int,
    top_fraction: float,
    ranking: str,
    samples: int,
    seed: int,
    device: torch.device,
    batch_size: int = 64,
    method: Method | None = None,
    dropout_rate: float = 0.1,
    prep: Preprocessing = IMAGENET_EVAL,
    dtype: torch.dtype = torch.float32,
    from_read_layer: bool = True,
) -> StochasticActivity:
    """T = `samples` stochastic passes over all images (read once per batch). `method` None:
    dropout (the model's own, else injected at `dropout_rate`); "tta": test-time augmentation.
    The model runs in `dtype` (precision.py); augmentation and pooling stay float32.

    Injected dropout changes nothing before the first read layer's input, so where the model's
    graph allows it that input is computed once per batch and every pass starts there: the same
    passes, the same draws (`from_read_layer=False` runs whole passes, the tests' reference)."""
    names = [layer.name for layer in layers]
    method = method or pick_method(module, names, device, prep.input_size)
    start_at = (
        split_at_first_read_layer(module, names, at_input=True)
        if method == "injected_dropout" and from_read_layer
        else None
    )
    n_neurons = sum(layer.channels for layer in layers)
    passes = np.empty((samples, n_images, n_neurons), dtype=bool)
    reader = hooks.ActivationReader(module, names)
    outputs: list[torch.Tensor] = []
    keep_output = module.register_forward_hook(
        lambda _m, _i, out: outputs.append(out.detach()) if isinstance(out, torch.Tensor) else None
    )
    split: list[EntropySplit] = []
    generator = torch.Generator().manual_seed(seed)
    fork_devices = [device] if device.type == "cuda" else []
    noise = {
        "mc_dropout": lambda: dropout_on(module),
        "injected_dropout": lambda: injected_dropout(module, names, dropout_rate),
        "tta": _noop,
    }[method]
    try:
        with torch.random.fork_rng(devices=fork_devices), noise():
            torch.manual_seed(seed)  # dropout draws from the global generator; fork_rng restores it
            for start in range(0, n_images, batch_size):
                rows = list(range(start, min(start + batch_size, n_images)))
                batch = inputs(rows).to(device)
                outputs.clear()
                forward = None
                if start_at is not None:
                    with torch.inference_mode(), autocast(device, dtype):
                        batch = start_at.prefix(batch)
                    forward = partial(_suffix_pass, start_at.suffix, outputs)
                for t in range(samples):
                    view = augment(batch, generator, prep) if method == "tta" else batch
                    with autocast(device, dtype):
                        pooled = reader.read(view, forward).cpu().numpy()
                    passes[t, rows[0] : rows[-1] + 1] = active_mask(pooled, layers, top_fraction, ranking)
                if method != "tta" and len(outputs) == samples and outputs[0].ndim == 2:
                    probabilities = torch.stack(outputs).float().softmax(dim=-1).cpu().numpy()
                    split.append(decompose(probabilities))
    finally:
        keep_output.remove()
        reader.close()
    entropy = None
    if split and sum(part.total.shape[0] for part in split) == n_images:
        entropy = EntropySplit(
            *(
                np.concatenate([getattr(part, f) for part in split])
                for f in ("total", "aleatoric", "epistemic")
            )
        )
    return StochasticActivity(method, passes, entropy, dropout_rate if method == "injected_dropout" else None)


@contextmanager
def _noop() -> Iterator[None]:
    yield


def _suffix_pass(suffix: nn.Module, outputs: list[torch.Tensor], start: torch.Tensor) -> torch.Tensor:
    """A pass from the first read layer's input; its output is kept as the model's own forward
    hook keeps a whole pass's (the entropy split reads them)."""
    out: torch.Tensor = suffix(start)
    outputs.append(out.detach())
    return out


def expected_support(
    passes: np.ndarray, labels: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster and neuron: the mean over passes of the support (= the mean activity
    probability of the cluster's images) and its standard deviation across passes."""
    membership = one_hot(labels, n_clusters)
    sizes = np.asarray(membership.sum(axis=1)).ravel()[:, None]
    supports = np.stack([(membership @ p.astype(np.float32)) / sizes for p in passes])
    return supports.mean(axis=0), supports.std(axis=0)
