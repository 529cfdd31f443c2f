"""Model uncertainty and input sensitivity of the active sets, from stochastic passes over a
sample of the job's images (the rows a planner picks, or all of them).

- Dropout passes. Where a dropout module with p > 0 runs before some read layer, its own dropout
  is kept on at inference (Monte Carlo dropout, Gal & Ghahramani 2016): the passes sample the
  model's uncertainty, and the predictive-entropy split (entropy.py) is read as aleatoric plus
  epistemic. torchvision's VGG/AlexNet drop out only in the classifier, after every conv
  feature, and ViT/Swin carry Dropout(p=0); those models, like every other, get dropout
  injected at test time on the input of each read layer. Injected into a model trained without
  it, at a rate nobody fitted, dropout measures *sensitivity to feature dropout*, not what the
  model lacks (Ledda et al. 2023 fit a scale against calibration, for regression only). With
  class labels its rate can be calibrated (dropout_calibration.py); only a calibrated rate makes
  the passes epistemic. `interpretation` says which reading holds.
- Input sensitivity: test-time augmentation, a seeded flip, crop and small colour jitter per
  pass. It measures how the active sets move with the input, and is reported as such.

Each pass yields active sets; their mean over passes is each image's probability that a neuron
is active. Every image's draws are its own (row_dropout.py): the same rows and seed give the
same passes whatever the sample or the batches around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuron_atlas_client.contracts.models import IMAGENET_EVAL, Preprocessing
from neuron_core import hooks
from neuron_core.active_sets import active_mask
from neuron_core.groups import one_hot
from neuron_core.instrumented import InstrumentedModel
from neuron_core.neuron_axis import LayerInfo
from neuron_core.read_layer_start import split_at_first_read_layer
from services.uncertainty.dropout_calibration import DropoutCalibration
from services.uncertainty.entropy import EntropySplit, Interpretation, concatenate, decompose
from services.uncertainty.model_inputs import InputSource
from services.uncertainty.precision import autocast
from services.uncertainty.row_dropout import InjectedDropout, RowDraws, Stream, dropout_modules, own_dropout
from services.uncertainty.stats import IntervalMethod, proportion_interval

__all__ = [
    "ExpectedSupport",
    "InputSource",
    "Method",
    "StochasticActivity",
    "augment",
    "dropout_modules",
    "dropout_reaches_layers",
    "expected_support",
    "pick_method",
    "stochastic_active_sets",
]

Method = Literal["mc_dropout", "injected_dropout", "tta"]
PassInterpretation = Interpretation | Literal["input sensitivity"]
AUGMENTATION_DRAWS = 6  # uniforms per image and pass: flip, scale, two shifts, brightness, contrast


def dropout_reaches_layers(
    module: nn.Module, layers: Sequence[str], device: torch.device, input_size: int = IMAGENET_EVAL.input_size
) -> bool:
    """Whether some dropout module runs before the last selected layer finishes (one probe pass)."""
    dropouts = dropout_modules(module)
    if not dropouts:
        return False
    calls: list[str] = []
    names = {child: name for name, child in module.named_modules()}
    with InstrumentedModel(module) as instrumented, torch.inference_mode():
        instrumented.watch([names[d] for d in dropouts], lambda *_: calls.append("dropout"))
        instrumented.watch(layers, lambda *_: calls.append("layer"))
        module(torch.zeros(1, 3, input_size, input_size, device=device))
    last_layer = len(calls) - 1 - calls[::-1].index("layer")
    return "dropout" in calls[:last_layer]


def pick_method(
    module: nn.Module, layers: Sequence[str], device: torch.device, input_size: int = IMAGENET_EVAL.input_size
) -> Method:
    """The model's own dropout where it reaches the read layers, else injected dropout."""
    reaches = dropout_reaches_layers(module, layers, device, input_size)
    return "mc_dropout" if reaches else "injected_dropout"


def augment(batch: torch.Tensor, draws: torch.Tensor, prep: Preprocessing = IMAGENET_EVAL) -> torch.Tensor:
    """A mild test-time augmentation of a normalised batch: flip (p=0.5), a random crop of
    85-100% of the side resized back, brightness/contrast jitter of +-10%. `draws`: uniforms in
    [0, 1), (images, 6), one row per image (`RowDraws`, so an image's view is its own). Flip,
    crop and resize are one affine resampling of the whole batch."""
    n = batch.shape[0]
    device = batch.device
    u = draws.float().cpu()
    mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)
    pixels = batch * std + mean
    flip = torch.where(u[:, 0] < 0.5, -1.0, 1.0)
    scale = 0.85 + 0.15 * u[:, 1]
    shift = (1.0 - scale) * (2.0 * u[:, 2:4].T - 1.0)  # stays inside
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, 0, 2], theta[:, 1, 2] = shift[0], shift[1]
    grid = F.affine_grid(theta.to(device), list(batch.shape), align_corners=False)
    pixels = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    brightness = (1.0 + 0.2 * (u[:, 4] - 0.5)).to(device).view(n, 1, 1, 1)
    contrast = (1.0 + 0.2 * (u[:, 5] - 0.5)).to(device).view(n, 1, 1, 1)
    level = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = ((pixels * brightness - level) * contrast + level).clamp(0.0, 1.0)
    return (pixels - mean) / std


@dataclass(frozen=True)
class StochasticActivity:
    """Active sets of T stochastic passes over the sampled `rows`, bool (T, len(rows), neurons);
    for dropout passes, the predictive-entropy split per sampled row; the dropout rate injected
    (None for the model's own dropout and for augmentation), and what the passes measure."""

    method: Method
    rows: np.ndarray
    passes: np.ndarray
    interpretation: PassInterpretation
    entropy: EntropySplit | None = None
    dropout_rate: float | None = None

    @property
    def probability(self) -> np.ndarray:
        """Per sampled row and neuron, the share of passes in which the neuron was active."""
        return self.passes.mean(axis=0, dtype=np.float32)


def stochastic_active_sets(
    module: nn.Module,
    layers: Sequence[LayerInfo],
    inputs: InputSource,
    rows: Sequence[int],
    top_fraction: float,
    ranking: str,
    samples: int,
    seed: int,
    device: torch.device,
    batch_size: int = 64,
    method: Method | None = None,
    dropout_rate: float = 0.1,
    calibration: DropoutCalibration | None = None,
    prep: Preprocessing = IMAGENET_EVAL,
    dtype: torch.dtype = torch.float32,
    from_read_layer: bool = True,
) -> StochasticActivity:
    """T = `samples` stochastic passes over the images `rows` (each read once per batch, in the
    order given). `method` None: dropout (the model's own, else injected); "tta": test-time
    augmentation. Injected dropout runs at `calibration.rate` where that rate is calibrated
    (interpretation "epistemic"), else at `dropout_rate` ("sensitivity to feature dropout").
    The model runs in `dtype` (precision.py); augmentation and pooling stay float32.

    Image `row`'s draws in pass t depend on (seed, row, t) only, so a sample's passes are those
    rows' passes in a run over every image. Injected dropout changes nothing before the first
    read layer's input, so where the model's graph allows it that input is computed once per
    batch and every pass starts there: the same passes, the same draws (`from_read_layer=False`
    runs whole passes, the tests' reference)."""
    names = [layer.name for layer in layers]
    rows = [int(r) for r in rows]
    method = method or pick_method(module, names, device, prep.input_size)
    rate, interpretation = _rate_and_interpretation(method, dropout_rate, calibration)
    start_at = (
        split_at_first_read_layer(module, names, at_input=True)
        if method == "injected_dropout" and from_read_layer
        else None
    )
    n_neurons = sum(layer.channels for layer in layers)
    passes = np.empty((samples, len(rows), n_neurons), dtype=bool)
    reader = hooks.ActivationReader(module, names)
    outputs: list[torch.Tensor] = []
    keep_output = reader.instrumented.watch(
        [""], lambda _name, out: outputs.append(out.detach()) if isinstance(out, torch.Tensor) else None
    )
    split: list[EntropySplit] = []
    draws = RowDraws(seed, device, Stream.AUGMENTATION if method == "tta" else Stream.DROPOUT)
    fork_devices = [device] if device.type == "cuda" else []
    noise: AbstractContextManager[object] = (
        own_dropout(module, draws)
        if method == "mc_dropout"
        else InjectedDropout(module, names, rate or 0.0, draws)
        if method == "injected_dropout"
        else nullcontext()
    )
    try:
        with torch.random.fork_rng(devices=fork_devices), noise:
            # only a sequence-first dropout module still draws from the global generator
            torch.manual_seed(seed)
            for first in range(0, len(rows), batch_size):
                batch_rows = rows[first : first + batch_size]
                batch = inputs(batch_rows).to(device)
                outputs.clear()
                forward = None
                if start_at is not None:
                    with torch.inference_mode(), autocast(device, dtype):
                        batch = start_at.prefix(batch)
                    forward = partial(_suffix_pass, start_at.suffix, outputs)
                for t in range(samples):
                    draws.start(batch_rows, t)
                    view = (
                        augment(batch, draws.uniform((AUGMENTATION_DRAWS,)), prep)
                        if method == "tta"
                        else batch
                    )
                    with autocast(device, dtype):
                        pooled = reader.read(view, forward).cpu().numpy()
                    passes[t, first : first + len(batch_rows)] = active_mask(
                        pooled, layers, top_fraction, ranking
                    )
                if interpretation != "input sensitivity" and len(outputs) == samples and outputs[0].ndim == 2:
                    probabilities = torch.stack(outputs).float().softmax(dim=-1).cpu().numpy()
                    split.append(decompose(probabilities, interpretation))
    finally:
        keep_output.remove()
        reader.close()
    entropy = concatenate(split) if split and sum(len(part.total) for part in split) == len(rows) else None
    return StochasticActivity(method, np.asarray(rows, dtype=np.int64), passes, interpretation, entropy, rate)


def _rate_and_interpretation(
    method: Method, dropout_rate: float, calibration: DropoutCalibration | None
) -> tuple[float | None, PassInterpretation]:
    """The injected rate (None: none injected) and what the passes measure."""
    if method == "tta":
        return None, "input sensitivity"
    if method == "mc_dropout":
        return None, "epistemic"
    if calibration is not None and calibration.calibrated:
        return calibration.rate, "epistemic"
    return dropout_rate, "sensitivity to feature dropout"


def _suffix_pass(suffix: nn.Module, outputs: list[torch.Tensor], start: torch.Tensor) -> torch.Tensor:
    """A pass from the first read layer's input; its output is kept as the model's own forward
    hook keeps a whole pass's (the entropy split reads them)."""
    out: torch.Tensor = suffix(start)
    outputs.append(out.detach())
    return out


@dataclass(frozen=True)
class ExpectedSupport:
    """Per cluster and neuron, the support expected under the stochastic passes, estimated on
    the cluster's sampled images; (clusters, neurons) arrays, NaN for a cluster with none.

    - `mean`: the mean over passes and sampled images of the active indicator (the sample's
      share of active (image, pass) pairs).
    - `sd_passes`: the standard deviation across passes of the support over the sampled images:
      how much the passes move it, not how much the sample does.
    - `sampled`: sampled images per cluster (clusters,).
    - `standard_error`: binomial-style, sqrt(mean (1 - mean) / sampled): each sampled image
      counts as one trial. A share in [0, 1] has a variance of at most mean (1 - mean), so this
      bounds the spread from which images were sampled and from the passes alike.
    - `interval(...)`: the support interval of the stats (Clopper-Pearson or Wilson) with
      `sampled` trials and mean x sampled successes, for the expected support of such images.
    """

    mean: np.ndarray
    sd_passes: np.ndarray
    sampled: np.ndarray

    @property
    def standard_error(self) -> np.ndarray:
        n = self.sampled.astype(np.float64)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.mean * (1.0 - self.mean) / n)

    def interval(
        self, cluster: int, neurons: np.ndarray, alpha: float, method: IntervalMethod = "clopper_pearson"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) for `neurons` of `cluster` at 1 - alpha; NaN where it has no sampled image."""
        n = int(self.sampled[cluster])
        if n == 0:
            nan = np.full(len(neurons), np.nan)
            return nan, nan.copy()
        share = np.asarray(self.mean[cluster, neurons], dtype=np.float64)
        return proportion_interval(share * n, np.full(len(neurons), float(n)), alpha, method)


def expected_support(
    passes: np.ndarray, rows: Sequence[int], labels: np.ndarray, n_clusters: int
) -> ExpectedSupport:
    """From passes (T, len(rows), neurons) over the sampled `rows` and the cluster of every image
    of the job (`labels`), per cluster and neuron over the cluster's sampled images."""
    clusters = np.asarray(labels, dtype=np.int64)[np.asarray(rows, dtype=np.int64)]
    sampled = np.bincount(clusters, minlength=n_clusters)
    membership = one_hot(clusters, n_clusters)  # (clusters, sampled rows)
    # running sums over passes: a (passes, clusters, neurons) stack would hold T copies
    total = np.zeros((n_clusters, passes.shape[2]), dtype=np.float64)
    squares = np.zeros_like(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        for p in passes:
            support = np.asarray(membership @ p.astype(np.float32)) / sampled[:, None]
            total += support
            squares += support * support
        mean = total / len(passes)
        sd = np.sqrt(np.clip(squares / len(passes) - mean * mean, 0.0, None))
    return ExpectedSupport(mean.astype(np.float32), sd.astype(np.float32), sampled)
