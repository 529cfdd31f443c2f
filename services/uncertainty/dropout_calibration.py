"""The rate of dropout injected into a model trained without it, calibrated on labelled images.

Dropout injected at test time (post-hoc dropout injection, Ledda et al. 2023) estimates model
uncertainty only at a rate fitted against calibration (they fit it for regression); at an
arbitrary rate it measures the model's sensitivity to feature dropout. When images carry a class
label (the target model's class index; -1 for none), `calibrate_injected_dropout`:

1. splits the labelled images among `rows`, seeded, into fit images and evaluation images;
2. on the fit images, for each rate of a grid (0, the deterministic model, is always in it),
   averages the class probabilities of `samples` dropout passes and scores them against the
   labels: negative log-likelihood (NLL) and expected calibration error (ECE, 15 equal-width
   confidence bins, Guo et al. 2017);
3. chooses the rate of least fit NLL (ties: the smaller rate);
4. on the evaluation images, which the rate was not fitted on, scores the chosen rate and the
   deterministic model.

The rate counts as calibrated when it is above 0 and lowers the held-out NLL below the
deterministic model's by more than twice the standard error of that gain (per-image NLL
differences, paired): a rate that only matches the deterministic model up to noise calibrates
nothing. Only a calibrated rate makes the dropout passes read as epistemic uncertainty
(entropy.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from neuron_atlas_client.errors import InputError
from neuron_core.neuron_axis import LayerInfo
from neuron_core.read_layer_start import split_at_first_read_layer
from services.uncertainty.entropy import Interpretation
from services.uncertainty.model_inputs import InputSource
from services.uncertainty.precision import autocast
from services.uncertainty.row_dropout import InjectedDropout, RowDraws

DEFAULT_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
ECE_BINS = 15
MIN_IMAGES_PER_SIDE = 2
_SPLIT_STREAM = 7  # the fit/evaluation split's own random stream under the job's seed


def image_nll(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log p(label) per image, in nats; probabilities (images, classes)."""
    p = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return np.asarray(-np.log(np.maximum(p, np.finfo(np.float64).tiny)))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(label) over images, in nats; probabilities (images, classes)."""
    return float(image_nll(probabilities, labels).mean())


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: confidence (the top class's probability) in `bins` equal-width bins ((m-1)/M, m/M];
    the mean over images of |accuracy - mean confidence| of their bin (Guo et al. 2017)."""
    p = np.asarray(probabilities, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.bincount(which, weights=correct, minlength=bins) - np.bincount(
        which, weights=confidence, minlength=bins
    )
    return float(np.abs(gap).sum() / counts.sum())


@dataclass(frozen=True)
class CalibrationPasses:
    """Model passes per labelled image (the planner's cost). Where the model splits at its first
    read layer (as the injected-dropout passes do), each is a pass from that layer's input, plus
    one pass to it per image."""

    fit: int
    evaluation: int  # at most: a chosen rate of 0 needs only the deterministic pass

    def total(self, fit_images: int, evaluation_images: int) -> int:
        return self.fit * fit_images + self.evaluation * evaluation_images


def calibration_passes(grid: Sequence[float], samples: int) -> CalibrationPasses:
    """Fit images: one deterministic pass and `samples` per rate above 0; evaluation images: one
    deterministic pass and `samples` at the chosen rate."""
    dropping = len({float(r) for r in grid if r > 0.0})
    return CalibrationPasses(fit=1 + samples * dropping, evaluation=1 + samples)


@dataclass(frozen=True)
class DropoutCalibration:
    """The fitted injected-dropout rate and how well it calibrates, on fit and held-out images.
    NLL in nats, ECE over 15 bins; fit_* are per rate of `grid`, evaluation_* at `rate`, and
    deterministic_* the model without dropout, both on the evaluation images; gain_se is the
    standard error of the held-out NLL gain (deterministic minus chosen, paired per image)."""

    rate: float
    grid: tuple[float, ...]
    samples: int
    fit_rows: tuple[int, ...]
    evaluation_rows: tuple[int, ...]
    fit_nll: tuple[float, ...]
    fit_ece: tuple[float, ...]
    evaluation_nll: float
    evaluation_ece: float
    deterministic_nll: float
    deterministic_ece: float
    gain_se: float

    @property
    def gain(self) -> float:
        """How far the chosen rate lowers the held-out NLL below the deterministic model's."""
        return self.deterministic_nll - self.evaluation_nll

    @property
    def calibrated(self) -> bool:
        """A rate above 0 that lowers the NLL on images it was not fitted on by more than 2
        standard errors of the paired per-image gain."""
        return self.rate > 0.0 and self.gain > 2.0 * self.gain_se

    @property
    def interpretation(self) -> Interpretation:
        return "epistemic" if self.calibrated else "sensitivity to feature dropout"

    @property
    def fit_nll_at_rate(self) -> float:
        return self.fit_nll[self.grid.index(self.rate)]

    @property
    def fit_ece_at_rate(self) -> float:
        return self.fit_ece[self.grid.index(self.rate)]

    @property
    def finding(self) -> str:
        """One sentence for the report: what the calibration found and what follows from it."""
        fit, held = len(self.fit_rows), len(self.evaluation_rows)
        if self.rate == 0.0:
            return (
                f"No injected dropout rate calibrates better than the deterministic model on {fit} "
                f"labelled images (NLL {self.fit_nll[0]:.4f}, ECE {self.fit_ece[0]:.4f} at rate 0): "
                "the dropout passes measure sensitivity to feature dropout."
            )
        edge = " (the grid's largest: a larger rate may fit better)" if self.rate == self.grid[-1] else ""
        scores = (
            f"rate {self.rate:g}{edge}, fitted on {fit} labelled images (NLL {self.fit_nll_at_rate:.4f}, "
            f"ECE {self.fit_ece_at_rate:.4f}), gives held-out NLL {self.evaluation_nll:.4f} against "
            f"{self.deterministic_nll:.4f} without dropout (gain {self.gain:.4f} ± {self.gain_se:.4f} SE) "
            f"and ECE {self.evaluation_ece:.4f} against {self.deterministic_ece:.4f}, on {held} other "
            "labelled images"
        )
        if self.calibrated:
            return f"Calibrated: {scores}; the dropout passes are read as epistemic uncertainty."
        return (
            f"Not calibrated: {scores}, no more than twice its standard error; the dropout passes "
            "measure sensitivity to feature dropout."
        )


def calibration_split(
    rows: Sequence[int], labels: np.ndarray, seed: int, fit_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The labelled images among `rows`, split at random (seeded) into fit and evaluation rows,
    each sorted. Raises InputError when either side would get fewer than 2 images."""
    labels = np.asarray(labels)
    candidates = np.unique(np.asarray(rows, dtype=np.int64))
    labelled = candidates[labels[candidates] >= 0]
    if len(labelled) < 2 * MIN_IMAGES_PER_SIDE:
        raise InputError(
            f"Calibrating the injected dropout rate needs at least {2 * MIN_IMAGES_PER_SIDE} "
            f"labelled images, and {len(labelled)} of the {len(candidates)} images given carry a label.",
            "Give more images a `label` (the target model's class index), or leave the rate "
            "uncalibrated (reported as sensitivity to feature dropout).",
        )
    order = np.random.default_rng([int(seed), _SPLIT_STREAM]).permutation(labelled)
    n_fit = min(max(round(len(order) * fit_share), MIN_IMAGES_PER_SIDE), len(order) - MIN_IMAGES_PER_SIDE)
    return np.sort(order[:n_fit]), np.sort(order[n_fit:])


def mean_probabilities(
    module: nn.Module,
    layers: Sequence[LayerInfo],
    inputs: InputSource,
    rows: Sequence[int],
    rates: Sequence[float],
    samples: int,
    seed: int,
    device: torch.device,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float32,
    highest_label: int = -1,
) -> np.ndarray:
    """Class probabilities (rates, rows, classes): per rate, the mean over `samples` passes with
    dropout injected on the read layers' inputs at that rate (rate 0: one deterministic pass).
    Each image's draws are its own (row_dropout.py) and the same for every rate. A model without
    class logits, or with no class `highest_label`, fails at its first pass."""
    names = [layer.name for layer in layers]
    start_at = split_at_first_read_layer(module, names, at_input=True)
    draws = RowDraws(seed, device)
    rows = [int(r) for r in rows]
    parts: list[np.ndarray] = []
    was_training = module.training
    module.eval()
    try:
        with InjectedDropout(module, names, 0.0, draws) as injected, torch.inference_mode():
            for first in range(0, len(rows), batch_size):
                batch_rows = rows[first : first + batch_size]
                batch = inputs(batch_rows).to(device)
                forward = start_at.suffix if start_at is not None else module
                if start_at is not None:
                    with autocast(device, dtype):
                        batch = start_at.prefix(batch)
                passes = partial(_probabilities, forward, batch, device, dtype)
                per_rate = []
                for rate in rates:
                    injected.rate = float(rate)
                    runs = range(samples) if rate > 0.0 else range(1)
                    total = np.zeros(0)
                    for t in runs:
                        draws.start(batch_rows, t)
                        p = passes()
                        _check_classes(p.shape[-1], highest_label)
                        total = p if t == 0 else total + p
                    per_rate.append(total / len(runs))
                parts.append(np.stack(per_rate))
    finally:
        module.train(was_training)
    return np.concatenate(parts, axis=1)


def _probabilities(
    forward: nn.Module, batch: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> np.ndarray:
    with autocast(device, dtype):
        logits = forward(batch)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(
            f"Calibrating the injected dropout rate needs class logits (images, classes) from the "
            f"model, and it returns {shape}.",
            "Use a classifier as the target model, or leave the rate uncalibrated.",
        )
    return logits.float().softmax(dim=-1).double().cpu().numpy()


def calibrate_injected_dropout(
    module: nn.Module,
    layers: Sequence[LayerInfo],
    inputs: InputSource,
    rows: Sequence[int],
    labels: np.ndarray,
    grid: Sequence[float] = DEFAULT_GRID,
    samples: int = 8,
    seed: int = 0,
    device: torch.device | None = None,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float32,
    fit_share: float = 0.5,
) -> DropoutCalibration:
    """Fit the injected dropout rate on labelled images among `rows` (`labels`: the class index of
    every image of the job, -1 for none) and score it on other labelled images (module docstring)."""
    device = device or torch.device("cpu")
    rates = tuple(sorted({0.0, *(float(r) for r in grid)}))
    if rates[0] < 0.0 or rates[-1] >= 1.0:
        raise InputError(f"Dropout rates must lie in [0, 1), and the grid holds {list(grid)}.")
    if samples < 1:
        raise InputError(f"Calibration needs at least one dropout pass per rate, not {samples}.")
    labels = np.asarray(labels, dtype=np.int64)
    fit_rows, evaluation_rows = calibration_split(rows, labels, seed, fit_share)
    run = partial(
        mean_probabilities, module, layers, inputs, samples=samples, seed=seed, device=device,
        batch_size=batch_size, dtype=dtype,
    )  # fmt: skip
    highest = int(max(labels[fit_rows].max(), labels[evaluation_rows].max()))
    fit_p = run(fit_rows.tolist(), rates, highest_label=highest)
    fit_labels = labels[fit_rows]
    fit_nll = tuple(negative_log_likelihood(p, fit_labels) for p in fit_p)
    fit_ece = tuple(expected_calibration_error(p, fit_labels) for p in fit_p)
    rate = rates[int(np.argmin(fit_nll))]  # the first of equal minima: the smaller rate
    held_out = run(evaluation_rows.tolist(), (0.0, rate) if rate > 0.0 else (0.0,))
    held_labels = labels[evaluation_rows]
    gains = image_nll(held_out[0], held_labels) - image_nll(held_out[-1], held_labels)
    return DropoutCalibration(
        rate=rate,
        grid=rates,
        samples=samples,
        fit_rows=tuple(int(r) for r in fit_rows),
        evaluation_rows=tuple(int(r) for r in evaluation_rows),
        fit_nll=fit_nll,
        fit_ece=fit_ece,
        evaluation_nll=negative_log_likelihood(held_out[-1], held_labels),
        evaluation_ece=expected_calibration_error(held_out[-1], held_labels),
        deterministic_nll=negative_log_likelihood(held_out[0], held_labels),
        deterministic_ece=expected_calibration_error(held_out[0], held_labels),
        gain_se=float(gains.std(ddof=1) / np.sqrt(len(gains))),
    )


def _check_classes(classes: int, highest: int) -> None:
    if highest >= classes:
        raise InputError(
            f"A label names class {highest}, and the target model has {classes} classes "
            f"(0 to {classes - 1}).",
            "Labels are the target model's class indices; fix the `label` column.",
        )
