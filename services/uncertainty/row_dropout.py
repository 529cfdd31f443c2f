"""Dropout whose draws belong to each image, not to the batch it happens to be in.

torch's dropout draws one mask for a whole batch from the global generator, so an image's mask
depends on which images share its batch and in what order. The uncertainty stage runs its passes
on a seeded sample of images that a planner picks (or on all of them), and an image must get the
same passes either way. Here image `row`'s draws in pass `t` come from a generator of its own,
seeded by (seed, row, t, stream) alone: numpy's PCG64 on a CPU (3-4x faster here than the draws
of torch's own dropout), a torch generator on the device elsewhere.

A draw is one uniform per element (per channel for channel dropout), and an element is dropped
where its uniform falls below the rate. The same uniforms therefore serve every rate (common
random numbers): the calibration compares rates on the same draws, and the passes at the chosen
rate repeat the calibration's draws at that rate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum
from functools import partial

import numpy as np
import torch
from torch import nn

from neuron_atlas_client.errors import InputError
from neuron_core.instrumented import InstrumentedModel

log = logging.getLogger(__name__)

# SELU's constants as torch's alpha dropout uses them: a dropped unit is set to -SCALE * ALPHA
_ALPHA_PRIME = 1.7580993408473766


class Stream(IntEnum):
    """Separate random streams for the kinds of draws a row gets."""

    DROPOUT = 0
    AUGMENTATION = 1


def row_seed(seed: int, row: int, t: int, stream: Stream) -> int:
    """A 63-bit seed for one image's draws in one pass, from (seed, row, pass, stream) only."""
    state = np.random.SeedSequence([int(seed), int(row), int(t), int(stream)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class RowDraws:
    """Per-image generators for one pass over one batch (`start`), then uniforms for each image
    in turn (`uniform`), in the order the model asks for them."""

    def __init__(self, seed: int, device: torch.device, stream: Stream = Stream.DROPOUT) -> None:
        self.seed = seed
        self.device = device
        self.stream = stream
        self._numpy: list[np.random.Generator] = []
        self._torch: list[torch.Generator] = []

    def start(self, rows: Sequence[int], t: int) -> None:
        seeds = [row_seed(self.seed, row, t, self.stream) for row in rows]
        if self.device.type == "cpu":
            self._numpy = [np.random.Generator(np.random.PCG64(s)) for s in seeds]
        else:
            self._torch = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    @property
    def rows(self) -> int:
        return len(self._numpy) if self.device.type == "cpu" else len(self._torch)

    def uniform(self, shape: Sequence[int]) -> torch.Tensor:
        """Float32 uniforms in [0, 1), (rows, *shape), each image's from its own generator."""
        if self.device.type == "cpu":
            return torch.from_numpy(np.stack([g.random(tuple(shape), dtype=np.float32) for g in self._numpy]))
        return torch.stack([torch.rand(tuple(shape), generator=g, device=self.device) for g in self._torch])


def row_dropout(
    x: torch.Tensor, rate: float, draws: RowDraws, channels: bool = False, alpha: bool = False
) -> torch.Tensor:
    """Dropout of `x` (images first) at `rate` with each image's own draws: elementwise, or whole
    channels (`channels`, as Dropout2d), as plain or alpha dropout (torch's formulas)."""
    if rate <= 0.0:
        return x
    shape = (x.shape[1], *([1] * (x.ndim - 2))) if channels else tuple(x.shape[1:])
    keep = (draws.uniform(shape) >= rate).to(x.device)
    if not alpha:
        return x * keep.to(x.dtype) * (1.0 / (1.0 - rate))
    a = 1.0 / ((_ALPHA_PRIME**2 * rate + 1.0) * (1.0 - rate)) ** 0.5
    kept = keep.to(x.dtype)
    return x * kept * a + (kept - 1.0) * _ALPHA_PRIME * a + _ALPHA_PRIME * a * rate


def dropout_modules(module: nn.Module) -> list[nn.modules.dropout._DropoutNd]:
    """Dropout modules that drop something: Dropout(p=0) (a ViT/Swin default) is no dropout."""
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and float(m.p) > 0.0]


class InjectedDropout:
    """Dropout at `rate` on the input of each read layer (an input edit of
    neuron_core.instrumented) inside `with`; the rate may change between passes (0: no
    dropout, no draws)."""

    def __init__(self, module: nn.Module, layers: Sequence[str], rate: float, draws: RowDraws) -> None:
        self.module = module
        self.layers = list(layers)
        self.rate = rate
        self.draws = draws
        self._instrumented = InstrumentedModel(module)

    def _drop(self, first: object) -> torch.Tensor | None:
        if not isinstance(first, torch.Tensor) or self.rate <= 0.0:
            return None
        if first.shape[0] != self.draws.rows:
            raise InputError(
                f"A read layer's input has {first.shape[0]} rows for a batch of {self.draws.rows} "
                "images: dropout is drawn per image, which needs the images on the first axis.",
                "Read layers whose inputs put the images first, or set --mc-samples 0.",
            )
        return row_dropout(first, self.rate, self.draws)

    def __enter__(self) -> InjectedDropout:
        try:
            for name in self.layers:
                self._instrumented.edit(name, self._drop, at_input=True)
        except BaseException:
            self._instrumented.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._instrumented.close()


@contextmanager
def own_dropout(module: nn.Module, draws: RowDraws) -> Iterator[None]:
    """The model's own dropout modules on, each drawing per image at its own rate; everything
    else (batch norm) in eval mode, as before the block once it ends.

    The dropout modules stay in eval mode (identity) and an output edit (neuron_core.instrumented)
    drops their output with the image's draws. A tensor whose first axis is not the batch (a
    sequence-first transformer) gets the module's own dropout from the global generator instead,
    which the caller seeds."""
    warned: list[bool] = []

    def drop(dropout: nn.modules.dropout._DropoutNd, output: object) -> object:
        if not isinstance(output, torch.Tensor):
            return output
        if output.shape[0] != draws.rows:
            if not warned:
                warned.append(True)
                log.warning(
                    "%s sees %d rows for a batch of %d images: its draws depend on the batch",
                    type(dropout).__name__,
                    output.shape[0],
                    draws.rows,
                )
            dropout.train()
            try:
                return dropout.forward(output)
            finally:
                dropout.eval()
        channels = isinstance(dropout, nn.Dropout1d | nn.Dropout2d | nn.Dropout3d | nn.FeatureAlphaDropout)
        alpha = isinstance(dropout, nn.AlphaDropout | nn.FeatureAlphaDropout)
        return row_dropout(output, float(dropout.p), draws, channels=channels, alpha=alpha)

    was_training = module.training
    module.eval()
    names = {child: name for name, child in module.named_modules()}
    instrumented = InstrumentedModel(module)
    try:
        for dropout in dropout_modules(module):
            instrumented.edit(names[dropout], partial(drop, dropout))
        yield
    finally:
        instrumented.close()
        module.train(was_training)
