"""The uncertainty stage's plan: how much of each method its budget buys.

`--uncertainty-budget X` lets the stage spend X forward-pass equivalents (FPE) per image, where
one FPE is one float32 pass of the target model over one image: the activation pass the stage
follows costs 1. Each kind of pass is priced by its FLOPs (torch's FlopCounterMode on one image)
and by what timing one batch of each kind against a float32 pass found a bfloat16 pass to cost
on that kind of device (the constants below: not the half its arithmetic suggests on a CPU), not
by seconds measured in the job, so the same job plans the same on the same kind of device and
repeats exactly. One batch of each kind is still timed in every job, for the record
(uncertainty_timing.json): where it departs from the constants, they are what to measure again.

The budget is spent in a fixed order that depends on no result:
1. statistics, the group bootstrap, the clustering resamples and the difference permutations
   (no model passes; bounded by their own options);
2. the dropout and augmentation passes, on a seeded sample of images (at most a quarter of the
   budget);
3. the pruning curve, on a seeded held-out sample (at most a third of the budget; each layer
   alone is pruned at alpha only, all layers at every threshold);
4. the specificity tests, concepts largest first (then highest level, then id), each on at most
   `ablation_max_images` held-out images and the shared reference images, while the rest of the
   budget lasts: the concepts after the first that does not fit are "not tested (budget)";
5. the importance test (uniform random sets), with `full` only.

A job of fewer than MIN_BUDGET_IMAGES images is budgeted as if it had that many. `full` runs
every method on every image and every concept, as the stage did before budgets (the pruning
curve on half of the images, held out).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from neuron_core.read_layer_start import ReadLayerStart
from services.uncertainty.precision import autocast

Budget = float | Literal["full"]
# What a pass costs beyond its FLOPs, measured by timing one batch of 64 of each kind of pass
# against a float32 pass of the same batch (ResNet18, a 2-core CPU with AVX-512 BF16, process CPU
# time, median of 7, 2026-12-07):
# - a bfloat16 pass took 0.65 to 0.69 of a float32 one, not the half its arithmetic suggests;
# - the saving is all in the later layers: the part up to layer1's output (a third of the FLOPs,
#   at 56 x 56) took 0.27 to 0.37 in bfloat16, as long as in float32 (memory-bound), and the rest
#   0.29 to 0.41, where the bfloat16 share of its FLOPs says 0.22 and 0.44;
# - a test-time augmentation pass took 0.15 to 0.2 FPE more than the pass (a float32 resampling);
# - injected dropout's per-image draws added under 0.05 FPE a pass;
# - a pass over 8 to 24 images cost about three times as much per image as one over 64 (the
#   stage batches its passes full).
# In the stage itself (1,024 images, the default budget) pruning and specificity passes came to
# 0.38-0.39 FPE each from layer1's output: 0.7 prices a bfloat16 pass at the top of the range.
# No GPU was measured: there a bfloat16 pass, and each part of it, counts half its FLOPs.
BFLOAT16_FACTOR = {"cpu": 0.7}
BFLOAT16_FACTOR_ELSEWHERE = 0.5
BFLOAT16_PREFIX_SAVES = {"cpu": False}  # the part before the first read layer runs no faster
AUGMENTATION_FPE = {"cpu": 0.2}
PASSES_SHARE = 0.25
PRUNING_SHARE = 1 / 3
MIN_SAMPLE = 16  # fewer sampled images than this give no useful estimate: the step is skipped
# A small job is budgeted as if it had this many images: X times a tiny activation pass buys no
# estimate at all, and the extra seconds are few (a 48-image demo gets seconds, not minutes).
# At the default budget, priced as passes cost on a CPU, 384 buys the dropout and augmentation
# passes a sample of 19 images (256 bought 12, under MIN_SAMPLE).
MIN_BUDGET_IMAGES = 384


@dataclass(frozen=True)
class PassCosts:
    """FPE per image of each kind of pass, in the passes' number format."""

    full: float
    prefix: float  # up to the first read layer's output
    partial: float  # from the first read layer's output
    dropout_prefix: float  # up to the first read layer's input (injected dropout starts there)
    dropout_partial: float
    augmentation: float = 0.0  # a test-time augmentation pass beyond its forward pass
    seconds: dict[str, float] = field(default_factory=dict)  # measured, per image, not used to plan

    def document(self) -> dict[str, float]:
        return {
            "full": round(self.full, 4),
            "augmentation": round(self.augmentation, 4),
            "prefix": round(self.prefix, 4),
            "partial": round(self.partial, 4),
            "dropout_prefix": round(self.dropout_prefix, 4),
            "dropout_partial": round(self.dropout_partial, 4),
        }


def count_flops(run: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        run()
    return int(counter.get_total_flops())


def pass_costs(
    module: nn.Module,
    start: ReadLayerStart | None,
    dropout_start: ReadLayerStart | None,
    sample: torch.Tensor,
    dtype: torch.dtype,
    time_it: bool = True,
) -> PassCosts:
    """FLOPs of each kind of pass on one image of `sample`, as FPE, and (optionally) the
    seconds per image of one batch of each, timed for the record."""
    one = sample[:1]
    full = max(count_flops(lambda: module(one)), 1)

    device = sample.device.type
    bfloat16 = dtype == torch.bfloat16
    factor = BFLOAT16_FACTOR.get(device, BFLOAT16_FACTOR_ELSEWHERE) if bfloat16 else 1.0
    prefix_saves = BFLOAT16_PREFIX_SAVES.get(device, True)

    def split_costs(split: ReadLayerStart | None) -> tuple[float, float]:
        """(prefix, partial) in FPE: the two halves of the split graph hold every operation of
        the pass once, so the partial pass is the rest of the pass's cost (see the constants)."""
        if split is None:
            return 0.0, factor
        share = min(count_flops(lambda: split.prefix(one)) / full, 1.0)
        prefix = share * factor if prefix_saves else min(share, factor)
        # never below what the partial's own FLOPs cost at a bfloat16 rate
        return prefix, max(factor - prefix, (1.0 - share) * (0.5 if bfloat16 else 1.0))

    prefix, partial = split_costs(start)
    dropout_prefix, dropout_partial = split_costs(dropout_start)
    seconds = _timed(module, start, sample, dtype) if time_it else {}
    return PassCosts(
        full=factor,
        prefix=prefix,
        partial=partial,
        dropout_prefix=dropout_prefix,
        dropout_partial=dropout_partial,
        augmentation=AUGMENTATION_FPE.get(device, 0.0),
        seconds=seconds,
    )


def _timed(
    module: nn.Module, start: ReadLayerStart | None, sample: torch.Tensor, dtype: torch.dtype
) -> dict[str, float]:
    """Seconds per image of one run of each kind of pass over `sample`, for the record only: a
    single run each (no repeats), so it costs a few passes and is as noisy as one batch is."""

    def seconds(run: Callable[[], object], precision: torch.dtype) -> float:
        with torch.inference_mode(), autocast(sample.device, precision):
            began = time.perf_counter()
            run()
        return round((time.perf_counter() - began) / sample.shape[0], 6)

    measured = {"forward_float32": seconds(lambda: module(sample), torch.float32)}
    measured["full"] = seconds(lambda: module(sample), dtype)
    if start is not None:
        with torch.inference_mode(), autocast(sample.device, dtype):
            begun = start.prefix(sample)
        measured["prefix"] = seconds(lambda: start.prefix(sample), dtype)
        measured["partial"] = seconds(lambda: start.suffix(begun), dtype)
    return measured


@dataclass(frozen=True)
class ConceptRef:
    """A concept as the plan sees it."""

    level: int  # 0-based
    index: int
    size: int
    has_group: bool


@dataclass
class Allocation:
    """What the plan allows each method."""

    budget: Budget
    allowed: float | None
    passes_rows: np.ndarray  # the dropout and augmentation passes' sample
    pruning_rows: np.ndarray  # the pruning curve's held-out images
    specificity: dict[tuple[int, int], str]  # concept -> tested | budget | too_few_images | no_group
    importance: bool
    costs: dict[str, float] = field(default_factory=dict)  # planned FPE per step

    @property
    def planned(self) -> float:
        return float(sum(self.costs.values()))


def concept_order(concepts: Sequence[ConceptRef]) -> list[ConceptRef]:
    """Largest first, then the highest level, then the lowest index: no result decides it."""
    return sorted(concepts, key=lambda c: (-c.size, -c.level, c.index))


def specificity_images(size: int, max_test: int) -> int:
    return min(max_test, size // 2)


def allocate(
    budget: Budget,
    n_images: int,
    costs: PassCosts,
    concepts: Sequence[ConceptRef],
    testable: Callable[[ConceptRef], bool],
    seed: int,
    mc_samples: int,
    tta_samples: int,
    mc_dropout: bool,
    pruning_variants: int,
    full_pruning_variants: int,
    max_test_images: int,
    reference_images: int,
    importance_sets: int,
    labelled: np.ndarray | None = None,
    calibration: float = 0.0,
) -> Allocation:
    """The plan (see the module doc). `testable(concept)`: whether its images can give a
    p-value below alpha at all; `pruning_variants`: model variants per held-out image
    (`full_pruning_variants` with `full`, every layer alone at every threshold); `labelled`
    (bool per image) and `calibration` (passes per labelled image that fitting and scoring
    injected dropout's rate take)."""
    full = budget == "full"
    allowed = None if full else float(budget) * max(n_images, MIN_BUDGET_IMAGES)
    order = np.random.default_rng([seed, 24]).permutation(n_images)
    spent: dict[str, float] = {}

    # 2. dropout and augmentation passes on a seeded sample (labelled images in it also fit and
    # score injected dropout's rate: `calibration` passes from the read layer's input each)
    dropout = (
        mc_samples * costs.full
        if mc_dropout
        else (costs.dropout_prefix + mc_samples * costs.dropout_partial) * (mc_samples > 0)
    )
    per_image = np.full(n_images, dropout + tta_samples * (costs.full + costs.augmentation))
    if labelled is not None and calibration and not mc_dropout and mc_samples > 0:
        per_image[labelled[order]] += calibration * costs.dropout_partial
    cumulative = np.cumsum(per_image)
    share = PASSES_SHARE * (allowed or 0.0)
    sample = n_images if full else _affordable_prefix(cumulative, share)
    passes_rows = np.sort(order[:sample]) if per_image[0] > 0 else np.empty(0, dtype=np.int64)
    spent["model passes"] = float(cumulative[passes_rows.shape[0] - 1]) if passes_rows.shape[0] else 0.0

    # 3. the pruning curve on held-out images (the last of the seeded order: apart from the
    # passes' sample wherever the collection allows)
    variants = full_pruning_variants if full else pruning_variants
    per_held_out = costs.prefix + variants * costs.partial
    held_out = (
        n_images // 2 if full else _affordable(PRUNING_SHARE * (allowed or 0.0), per_held_out, n_images // 2)
    )
    pruning_rows = np.sort(order[n_images - held_out :]) if pruning_variants else np.empty(0, dtype=np.int64)
    spent["pruning"] = per_held_out * pruning_rows.shape[0]

    # 4. specificity: largest concepts first while the budget lasts
    shared = reference_images * (costs.prefix + costs.partial)
    remaining = None if full else (allowed or 0.0) - spent["model passes"] - spent["pruning"] - shared
    status: dict[tuple[int, int], str] = {}
    spent["specificity"] = 0.0
    exhausted = False
    for concept in concept_order(concepts):
        key = (concept.level, concept.index)
        if not concept.has_group:
            status[key] = "no_group"
            continue
        if not testable(concept):
            status[key] = "too_few_images"
            continue
        t = specificity_images(concept.size, max_test_images)
        cost = t * costs.prefix + (4 * t + 2 * reference_images) * costs.partial
        if exhausted or (remaining is not None and cost > remaining):
            exhausted = True
            status[key] = "budget"
            continue
        status[key] = "tested"
        spent["specificity"] += cost
        if remaining is not None:
            remaining -= cost
    if any(s == "tested" for s in status.values()):
        spent["specificity"] += shared

    # 5. importance against uniform random sets: only with everything allowed
    importance = full and importance_sets > 0
    if importance:
        per_concept = [min(c.size, max_test_images) for c in concepts if c.has_group]
        spent["importance"] = sum(
            k * (costs.prefix + (2 + 2 * importance_sets) * costs.partial) for k in per_concept
        )
    return Allocation(budget, allowed, passes_rows, pruning_rows, status, importance, spent)


def _affordable_prefix(cumulative: np.ndarray, allowance: float) -> int:
    """How many of the first images their cumulative cost affords, or none below MIN_SAMPLE."""
    count = int(np.searchsorted(cumulative, allowance, side="right"))
    return count if count >= min(MIN_SAMPLE, cumulative.shape[0]) else 0


def _affordable(allowance: float, per_image: float, most: int) -> int:
    """Images a step can afford, or none when fewer than MIN_SAMPLE (an estimate on fewer says
    nothing)."""
    if per_image <= 0:
        return most
    count = min(most, int(allowance // per_image))
    return count if count >= min(MIN_SAMPLE, most) else 0
