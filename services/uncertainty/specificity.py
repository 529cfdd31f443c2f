"""Causal specificity: does zeroing a concept's group lower the outputs of the concept's images
more than other images', on images the group was not chosen on?

The group is chosen as the neurons most often active on the concept's images, so zeroing it on
those same images lowers their outputs whatever the images share: a cluster of random images
passed the old test (group against uniformly drawn neurons) as often as a real concept. Here:

- a seeded split of the concept's images: `test` = min(max_images, n // 2) of them are held
  out, the rest (`selection`) choose the group again by the product's own rule
  (`neuron_core.groups.group_on`, the reported group's rule on fewer images);
- that group is zeroed on the held-out images and on `reference` images from outside the
  concept (the first of a seeded order of the job's images); drop = the image's unablated top
  logit minus the same class's logit with the group zeroed;
- the statistic is mean(held-out drops) - mean(reference drops), and its p-value comes from
  the permutation distribution over the held-out and reference images (stats.mean_difference_test).

Null: the concept's held-out images are affected like any other images. It holds by
construction for a random set of images, because the group was chosen without them: the
held-out and reference images are then exchangeable. A concept whose images can give no p-value
below alpha is not tested, and says so ("not tested: 3 images").

Keep-only turns it around (every selected neuron but the group zeroed: the concept's images
keep their outputs better). Two effect sizes read it beyond activity: the held-out images' drop
when as many of the most active non-group neurons per layer are zeroed instead, and each set's
drop per unit of pooled activation it removes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from neuron_atlas_client.contracts.uncertainty import KeepOnlySpecificity, Specificity, SpecificityResult
from neuron_core.groups import group_on
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty import ablation as abl
from services.uncertainty.model_inputs import ModelInputs
from services.uncertainty.stats import (
    EXACT_ARRANGEMENTS,
    PERMUTATION_DRAWS,
    mean_difference_test,
    welch_interval,
)

NULL = (
    "Zeroing the group, chosen again on some of the concept's images, lowers its other (held-out) "
    "images' outputs no more than other images' outputs."
)


def split(rows: np.ndarray, max_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(selection, test) rows of a concept: a seeded min(max_test, n // 2) held out for the test."""
    shuffled = rng.permutation(rows)
    t = min(max_test, rows.shape[0] // 2)
    return np.sort(shuffled[t:]), np.sort(shuffled[:t])


def min_p_value(test_images: int, reference_images: int) -> float:
    """The smallest p-value `mean_difference_test` can give these counts of images."""
    arrangements = math.comb(test_images + reference_images, test_images)
    if arrangements <= EXACT_ARRANGEMENTS:
        return 1.0 / arrangements
    return 1.0 / (1 + PERMUTATION_DRAWS)


def reference_rows(order: np.ndarray, concept: np.ndarray, count: int) -> np.ndarray:
    """The first `count` rows of the job's seeded `order` outside the concept."""
    outside = order[~np.isin(order, concept)]
    return np.sort(outside[:count])


def equally_active(group: np.ndarray, activity: np.ndarray, layers: Sequence[LayerInfo]) -> np.ndarray:
    """As many neurons per layer as the group holds there, the most active (`activity`, mean
    pooled activation on the selection images) of those outside it."""
    chosen = np.zeros_like(group)
    for layer in layers:
        cols = np.arange(layer.offset, layer.offset + layer.channels)
        size = int(group[cols].sum())
        if size == 0:
            continue
        outside = cols[~group[cols]]
        order = outside[np.argsort(-activity[outside], kind="stable")]
        chosen[order[:size]] = True
    return chosen


@dataclass
class BaseOutputs:
    """Each image's unablated top class and logit and its passes' start, computed once per row:
    reference images serve every concept."""

    model: abl.AblatedModel
    inputs: ModelInputs
    batch_size: int
    n_neurons: int
    keep_starts_of: set[int] = field(default_factory=set)
    _top: dict[int, tuple[int, float]] = field(default_factory=dict)
    _starts: dict[int, torch.Tensor] = field(default_factory=dict)

    def starts(self, rows: np.ndarray) -> torch.Tensor:
        missing = list(dict.fromkeys(int(r) for r in rows if int(r) not in self._starts))
        fresh: dict[int, torch.Tensor] = {}
        # full batches: on a CPU a pass over 8 images costs about three times as much per image
        # as one over 64
        for first in range(0, len(missing), self.batch_size):
            chunk = missing[first : first + self.batch_size]
            computed = self.model.starts(self.inputs(chunk))
            fresh.update(zip(chunk, computed, strict=True))
            everything = np.ones((1, self.n_neurons), dtype=bool)
            logits = abl.masked_logits(
                self.model,
                computed,
                everything,
                np.arange(len(chunk)),
                np.zeros(len(chunk), dtype=np.int64),
                self.batch_size,
            )
            for row, values in zip(chunk, logits, strict=True):
                top = int(values.argmax())
                self._top[row] = (top, float(values[top]))
            for row in chunk:
                if row in self.keep_starts_of:
                    self._starts[row] = fresh[row]
        return torch.stack([self._starts[int(r)] if int(r) in self._starts else fresh[int(r)] for r in rows])

    def top(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        classes = np.array([self._top[int(r)][0] for r in rows], dtype=np.int64)
        logits = np.array([self._top[int(r)][1] for r in rows], dtype=np.float64)
        return classes, logits


@dataclass(frozen=True)
class DropRequest:
    """Model variants (`keeps`, bool variants x neurons) to run on `rows`."""

    rows: np.ndarray
    keeps: np.ndarray


def drops(base: BaseOutputs, rows: np.ndarray, keeps: np.ndarray) -> np.ndarray:
    """(variants, rows): each row's unablated top logit minus that class's logit with only the
    neurons of `keeps[v]` kept."""
    return batched_drops(base, [DropRequest(rows, keeps)])[0]


def batched_drops(base: BaseOutputs, requests: Sequence[DropRequest]) -> list[np.ndarray]:
    """`drops` of each request, their passes run together in full batches (a concept's own
    variants fill a batch of 24 to 32 images, at two to three times the cost per image)."""
    if not requests:
        return []
    union = np.array(list(dict.fromkeys(int(r) for q in requests for r in q.rows)), dtype=np.int64)
    position = {int(r): i for i, r in enumerate(union)}
    starts = base.starts(union)
    keeps = np.vstack([q.keeps for q in requests])
    image_index, variant_index = [], []
    offset = 0
    for q in requests:
        at = np.array([position[int(r)] for r in q.rows], dtype=np.int64)
        m, variants = at.shape[0], q.keeps.shape[0]
        image_index.append(np.tile(at, variants))
        variant_index.append(offset + np.repeat(np.arange(variants), m))
        offset += variants
    images = np.concatenate(image_index)
    logits = abl.masked_logits(
        base.model, starts, keeps, images, np.concatenate(variant_index), base.batch_size
    )
    classes, top = base.top(union[images])
    chosen = logits.gather(1, torch.from_numpy(classes).view(-1, 1)).view(-1).numpy()
    every = top - chosen.astype(np.float64)
    out, first = [], 0
    for q in requests:
        size = q.rows.shape[0] * q.keeps.shape[0]
        out.append(every[first : first + size].reshape(q.keeps.shape[0], q.rows.shape[0]))
        first += size
    return out


@dataclass(frozen=True)
class Concept:
    level: int  # 0-based
    index: int
    rows: np.ndarray  # the concept's images
    group: np.ndarray  # bool over neurons: the reported group


def untested(status: str, note: str) -> Specificity:
    return Specificity(status=status, note=note)


@dataclass
class Prepared:
    """One concept's test up to its model passes: the split, the group chosen again, the
    variants to run (`requests`) and the seeded generator its permutations continue."""

    concept: Concept
    rng: np.random.Generator
    selection: np.ndarray
    test: np.ndarray
    reference: np.ndarray
    group: np.ndarray
    jaccard: float
    active_set: np.ndarray

    @property
    def requests(self) -> list[DropRequest]:
        if not self.group.any():
            return []
        return [
            DropRequest(self.test, np.vstack([~self.group, self.group, ~self.active_set])),
            DropRequest(self.reference, np.vstack([~self.group, self.group])),
        ]


def specificity_test(
    base: BaseOutputs,
    concept: Concept,
    partitions: np.ndarray,
    mask: np.ndarray,
    pooled: np.ndarray,
    allowed: np.ndarray,
    layers: Sequence[LayerInfo],
    order: np.ndarray,
    max_test_images: int,
    reference_count: int,
    min_support: float,
    rule: str,
    alpha: float,
    seed: int,
) -> Specificity:
    """The test for one concept (see the module doc); `order`: the job's seeded order of rows
    that reference images are taken from; `allowed`: the neurons the group rule may take.
    `specificity_tests` runs many concepts' passes together, with the same results."""
    prepared = prepare(
        concept,
        partitions,
        mask,
        pooled,
        allowed,
        layers,
        order,
        max_test_images,
        reference_count,
        min_support,
        rule,
        alpha,
        seed,
    )
    if isinstance(prepared, Specificity):
        return prepared
    return finish(prepared, batched_drops(base, prepared.requests), pooled, alpha)


def prepare(
    concept: Concept,
    partitions: np.ndarray,
    mask: np.ndarray,
    pooled: np.ndarray,
    allowed: np.ndarray,
    layers: Sequence[LayerInfo],
    order: np.ndarray,
    max_test_images: int,
    reference_count: int,
    min_support: float,
    rule: str,
    alpha: float,
    seed: int,
) -> Prepared | Specificity:
    """The concept's split, group and variants, or why it is not tested."""
    n = concept.rows.shape[0]
    rng = np.random.default_rng([seed, 23, concept.level + 1, concept.index])
    selection, test = split(concept.rows, max_test_images, rng)
    reference = reference_rows(order, concept.rows, reference_count)
    if test.shape[0] == 0 or selection.shape[0] == 0 or reference.shape[0] == 0:
        return untested("too_few_images", f"not tested: {n} images")
    floor = min_p_value(test.shape[0], reference.shape[0])
    if floor > alpha:
        return untested("too_few_images", f"not tested: {n} images")
    group = group_on(partitions, mask, selection, concept.level, min_support, rule, allowed)
    reported = concept.group
    union = int((group | reported).sum())
    jaccard = float((group & reported).sum() / union) if union else 1.0
    activity = pooled[selection].mean(axis=0)
    active_set = equally_active(group, activity, layers)
    return Prepared(concept, rng, selection, test, reference, group, jaccard, active_set)


def finish(
    prepared: Prepared, measured: Sequence[np.ndarray], pooled: np.ndarray, alpha: float
) -> Specificity:
    """The test's result from its variants' drops (`measured`, in `requests`' order)."""
    test, reference, group = prepared.test, prepared.reference, prepared.group
    active_set = prepared.active_set
    rng = prepared.rng
    if not group.any():
        zeros_t, zeros_r = np.zeros(test.shape[0]), np.zeros(reference.shape[0])
        group_t, group_r, keep_t, keep_r, active_t = zeros_t, zeros_r, zeros_t, zeros_r, zeros_t
    else:
        test_drops, reference_drops = measured
        group_t, keep_t, active_t = test_drops
        group_r, keep_r = reference_drops
    ablation = mean_difference_test(group_t, group_r, rng)
    keep = mean_difference_test(keep_r, keep_t, rng)
    interval = welch_interval(group_t, group_r, alpha)
    keep_interval = welch_interval(keep_r, keep_t, alpha)
    removed = pooled[test][:, group].sum(axis=1).mean() if group.any() else 0.0
    removed_active = pooled[test][:, active_set].sum(axis=1).mean() if active_set.any() else 0.0
    return Specificity(
        status="tested",
        note="tested",
        result=SpecificityResult(
            selection_images=prepared.selection.shape[0],
            test_images=test.shape[0],
            reference_images=reference.shape[0],
            selection_group_size=int(group.sum()),
            selection_group_jaccard=round(prepared.jaccard, 6),
            test_drop=_r(group_t.mean()),
            reference_drop=_r(group_r.mean()),
            effect=_r(group_t.mean() - group_r.mean()),
            interval=[_r(v) for v in interval] if interval else None,
            p_value=_sig(ablation.p_value),
            min_p_value=_sig(ablation.min_p_value),
            keep_only=KeepOnlySpecificity(
                test_drop=_r(keep_t.mean()),
                reference_drop=_r(keep_r.mean()),
                effect=_r(keep_r.mean() - keep_t.mean()),
                interval=[_r(v) for v in keep_interval] if keep_interval else None,
                p_value=_sig(keep.p_value),
            ),
            equally_active_drop=_r(active_t.mean()) if active_set.any() else None,
            drop_per_activation=_r(group_t.mean() / removed) if removed > 0 else None,
            equally_active_drop_per_activation=_r(active_t.mean() / removed_active)
            if removed_active > 0
            else None,
        ),
    )


def specificity_tests(
    base: BaseOutputs,
    prepared: Sequence[Prepared],
    pooled: np.ndarray,
    alpha: float,
    done: Callable[[], None] = lambda: None,
    chunk_images: int = 256,
) -> list[Specificity]:
    """`finish` of each prepared concept, the passes of up to `chunk_images` held-out images'
    concepts at a time run together (their starts are held in memory meanwhile); `done` hears
    of each finished concept."""
    results: list[Specificity] = []
    first = 0
    while first < len(prepared):
        last, images = first, 0
        while last < len(prepared):
            size = prepared[last].test.shape[0]
            if last > first and images + size > chunk_images:
                break
            images += size
            last += 1
        chunk = prepared[first:last]
        requests = [q.requests for q in chunk]
        measured = batched_drops(base, [r for rs in requests for r in rs])
        at = 0
        for q, rs in zip(chunk, requests, strict=True):
            results.append(finish(q, measured[at : at + len(rs)], pooled, alpha))
            at += len(rs)
            done()
        first = last
    return results


def concept_cost(test_images: int, reference_images: int) -> tuple[int, int]:
    """(prefix passes, partial passes) one concept's test runs beyond the shared reference
    images' own: a prefix, its unablated pass and three variants per held-out image, two
    variants per reference image."""
    return test_images, 4 * test_images + 2 * reference_images


def _r(value: float) -> float:
    return round(float(value), 6)


def _sig(value: float) -> float:
    return float(f"{float(value):.4g}")
