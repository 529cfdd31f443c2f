"""The difference test: do a child's difference neurons mark its images against its siblings'
images more than the product's own selection rule does on images that share no difference?

A child's difference neurons D (its group minus its parent's, `neuron_core.groups`) are chosen
on the child's images, so a test of them on those same images is double dipping: the
hypergeometric test this replaces (`ablation.difference_separation`) said p <= 0.05 in 44% to 93%
of tests on exchangeable images under `intersect` (issue 23; tests/services/uncertainty/
test_difference.py). Here the selection runs again inside every permutation:

- Null: the parent's images are exchangeable among the parent's image slots. A permutation
  moves the images among the slots while every partition stays fixed, so the child/sibling
  labels and the whole structure below the child's level move together. The group rule then
  runs again on the parent's subtree exactly as `neuron_core.groups.build_groups` runs it
  (`intersect`: a group is the intersection of its level-1 descendants' groups; `direct`: from
  the cluster's own images; generic neurons are decided on the whole collection, which a
  permutation inside the parent does not change), giving the child's difference set in that
  arrangement and its statistic.
- Statistic (`support`, the default): the mean over D of each neuron's support among the
  child's images minus its support among the sibling images (the parent's images outside the
  child). `carriers`: the share of the child's images that carry D minus the share of sibling
  images that do, where an image carries D when at least `min_support` of D's neurons are
  active in it (the group rule, turned per image). Both are calibrated; `carriers` saturates
  (every small child carries the neurons chosen on it, in every arrangement), so it finds a
  planted difference of 4-image children far less often (see the tests).
- The test is conditional on a difference set: only arrangements in which the child has one
  are compared, so a child whose difference set is rare under the null is not significant for
  that alone (counting the others as 0, p <= 0.05 came out in 17% of the tested children of
  20 images with sparse activity). p = (1 + #{S_perm >= S_obs}) / (1 + compared), with Besag &
  Clifford's sequential stopping (`sequential.py`), up to `permutations` compared arrangements
  (and at most 10 times as many drawn); every decision at alpha is the one all permutations
  give. Permutations are seeded per (level, cluster): one child's result does not depend on the
  others.

Everything is counted with sparse one-hot products over a batch of permutations at a time, as
`neuron_core.groups` counts clusters. No multiple-testing correction here: Benjamini-Hochberg
across a job's children belongs to the caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil, exp, lgamma, log
from typing import Literal

import numpy as np
import scipy.sparse as sp

from neuron_core.groups import build_groups, difference_neurons
from services.uncertainty.sequential import decided_after, sequential_pvalue

NULL = (
    "The parent's images are exchangeable between the child and its siblings: the group rule, "
    "re-run on every permutation of them, picks difference neurons that mark the child's images "
    "as strongly."
)

DifferenceStatus = Literal["tested", "no difference", "no siblings", "too few images"]
Statistic = Literal["support", "carriers"]

# Elements of the (permutations x clusters x neurons) counts one batch may hold: ~32 MiB.
_BATCH_ELEMENTS = 8_000_000
# Arrangements drawn per compared arrangement at most (those without a difference set are not
# compared), so a child whose difference set is rare under the null costs bounded time.
_DRAWS_PER_PERMUTATION = 10


@dataclass(frozen=True)
class DifferenceResult:
    """One child's difference test. On the real arrangement: the share of the child's and of
    the sibling images that carry the difference set, the mean support of its neurons among the
    child's and among the sibling images, and the statistic (None where there is no difference
    set or no sibling image). `permutations`: arrangements compared (0 when not tested).
    `min_p_value`: the smallest p this child's permutation distribution can give, 1 / (1 +
    permutations) or 1 / (distinct arrangements the statistic can tell apart), the larger."""

    status: DifferenceStatus
    child_carrier_share: float | None
    sibling_carrier_share: float | None
    child_support: float | None
    sibling_support: float | None
    statistic: float | None
    permutations: int
    p_value: float | None
    min_p_value: float


class ParentSubtree:
    """One parent's images and the structure below it: the group rule over a batch of
    permutations of its images among its image slots.

    A permutation is a row of `perms` (permutations x parent images): `perms[r, s]` is the
    parent's image (local index) placed in slot s; slot s keeps its labels at every level."""

    def __init__(
        self,
        partitions: np.ndarray,
        mask: np.ndarray,
        level: int,
        parent: int,
        min_support: float,
        rule: str,
        candidates: np.ndarray,
    ) -> None:
        """`level` is the children's level (0-based), `parent` a cluster of `level + 1`;
        `candidates` (bool over neurons) are the neurons that may join a group at all."""
        self.images = np.flatnonzero(partitions[:, level + 1] == parent)
        self.rule = rule
        self.min_support = min_support
        self.mask = mask[self.images]
        self.candidates = candidates
        self.active_count = self.mask.sum(axis=0)
        self.children, self.child_of_slot = np.unique(partitions[self.images, level], return_inverse=True)
        self.leaves, self.leaf_of_slot = np.unique(partitions[self.images, 0], return_inverse=True)
        self.leaf_sizes = np.bincount(self.leaf_of_slot)
        self.leaf_child = np.zeros(self.leaves.shape[0], dtype=np.int64)
        self.leaf_child[self.leaf_of_slot] = self.child_of_slot

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    def child(self, child: int) -> ChildSelection:
        """The selection rule for the child with local index `child`."""
        return ChildSelection(self, child)

    def arrangements(self, child: int) -> float:
        """How many arrangements of the parent's images the statistic can tell apart: the
        child's image set (`direct`), and with `intersect` also the split of the child's images
        into its level-1 clusters and of the sibling images into theirs, each of which decides
        a group by intersection (so equal-sized clusters are interchangeable). Exact below 10^8;
        above, only its inverse's size against 1 / (permutations + 1) matters."""
        n_child = int(np.count_nonzero(self.child_of_slot == child))
        log_count = _log_factorial([self.size]) - _log_factorial([n_child, self.size - n_child])
        if self.rule == "intersect":
            inside = self.leaf_child == child
            log_count += _log_set_partitions(self.leaf_sizes[inside]) + _log_set_partitions(
                self.leaf_sizes[~inside]
            )
        # the logarithms are good to ~1e-10, so below 10^8 rounding recovers the integer
        return float(round(exp(log_count))) if log_count < log(1e8) else exp(min(log_count, 700.0))


class ChildSelection:
    """One child's difference set and carriers in any arrangement of its parent's images.

    Only neurons that can join the child's group in some arrangement are counted: a group needs
    `needed` active images among the child's (per level-1 cluster under `intersect`), so a
    neuron active in fewer of the parent's images never joins. Under `intersect` a neuron joins
    the parent's group only if it is active in enough of the parent's images for every level-1
    cluster, so the counts of the sibling clusters are needed for those few neurons only; under
    `direct` the parent's group is the same in every arrangement (its images are), so its
    neurons are never difference neurons."""

    def __init__(self, subtree: ParentSubtree, child: int) -> None:
        self.subtree = subtree
        self.min_support = subtree.min_support
        self.slots = np.flatnonzero(subtree.child_of_slot == child)
        leaves = np.flatnonzero(subtree.leaf_child == child)
        # the child's level-1 clusters, numbered 0.. in the child's slots
        self.leaf_of_child_slot = np.searchsorted(leaves, subtree.leaf_of_slot[self.slots])
        self.child_leaf_sizes = subtree.leaf_sizes[leaves]
        counts = subtree.active_count
        possible = subtree.candidates & (counts >= 1)  # min_support > 0: never active, never in
        if subtree.rule == "direct":
            possible &= counts >= _needed(self.min_support, np.array([self.slots.shape[0]]))
            possible &= ~(counts >= self.min_support * subtree.size)
        else:
            possible &= counts >= _needed(self.min_support, self.child_leaf_sizes)
        self.neurons = np.flatnonzero(possible)
        active = subtree.mask[:, self.neurons]
        self.active = np.ascontiguousarray(active, dtype=np.float32)
        self.active_t = np.ascontiguousarray(active.T, dtype=np.float32)
        self.total = counts[self.neurons].astype(np.float32)  # active among all the parent's images
        shared = counts[self.neurons] >= _needed(self.min_support, subtree.leaf_sizes)
        self.shared = np.flatnonzero(shared) if subtree.rule == "intersect" else np.zeros(0, dtype=np.int64)

    def batch_cap(self) -> int:
        """Permutations per batch that keep the counts, and the per-image arrays, near
        `_BATCH_ELEMENTS` elements."""
        per_permutation = self.child_leaf_sizes.shape[0] * self.neurons.shape[0]
        per_permutation += self.subtree.leaves.shape[0] * self.shared.shape[0]
        per_permutation = max(per_permutation, self.subtree.size)
        return max(1, _BATCH_ELEMENTS // max(1, per_permutation))

    def differences(self, perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each arrangement (row of `perms`), over `self.neurons`: the child's difference
        set (bool) and each neuron's active count among the child's images."""
        ms = self.min_support
        if self.subtree.rule == "direct":
            counts = _counts(
                perms[:, self.slots], np.zeros(self.slots.shape[0], dtype=np.int64), 1, self.active
            )
            return counts[:, 0] >= ms * self.slots.shape[0], counts[:, 0]
        n_leaves = self.child_leaf_sizes.shape[0]
        counts = _counts(perms[:, self.slots], self.leaf_of_child_slot, n_leaves, self.active)
        group = np.asarray((counts >= (ms * self.child_leaf_sizes)[None, :, None]).all(axis=1))
        if self.shared.shape[0]:
            subtree = self.subtree
            shared = _counts(
                perms, subtree.leaf_of_slot, subtree.leaves.shape[0], self.active[:, self.shared]
            )
            in_parent = (shared >= (ms * subtree.leaf_sizes)[None, :, None]).all(axis=1)
            group[:, self.shared] &= ~in_parent
        return group, counts.sum(axis=1)

    def summaries(
        self, perms: np.ndarray, differences: np.ndarray, child_counts: np.ndarray, carriers: bool
    ) -> Summaries:
        """Per arrangement (row of `perms`, with its difference set and the child's active
        counts from `differences`): active difference neurons summed over the child's and over
        the sibling images, and with `carriers` the images of each that carry the set."""
        sizes = differences.sum(axis=1)
        child_hits = np.rint(np.einsum("pn,pn->p", differences, child_counts)).astype(np.int64)
        all_hits = np.rint(np.einsum("pn,n->p", differences, self.total)).astype(np.int64)
        sibling_hits = all_hits - child_hits
        child_carriers = sibling_carriers = np.zeros_like(sizes)
        if carriers:
            # a difference set holds a few neurons: a sparse product counts only those
            hits = np.rint(_rows_matrix(differences) @ self.active_t).astype(np.int64)  # (perms, images)
            carries = hits >= (self.min_support * sizes)[:, None]
            child_carriers = np.take_along_axis(carries, perms[:, self.slots], axis=1).sum(axis=1)
            sibling_carriers = carries.sum(axis=1) - child_carriers
        return Summaries(sizes, child_carriers, sibling_carriers, child_hits, sibling_hits)


@dataclass(frozen=True)
class Summaries:
    """Per arrangement: difference set size, carriers and active difference neurons summed
    over the child's images and over the sibling images (int64 arrays)."""

    sizes: np.ndarray
    child_carriers: np.ndarray
    sibling_carriers: np.ndarray
    child_hits: np.ndarray
    sibling_hits: np.ndarray

    def scores(self, statistic: Statistic, n_child: int, n_siblings: int) -> tuple[np.ndarray, np.ndarray]:
        """The statistic as an exact fraction (numerator, denominator > 0), times n_child *
        n_siblings, so arrangements compare in integers."""
        if statistic == "carriers":
            numerator = n_siblings * self.child_carriers - n_child * self.sibling_carriers
            return numerator, np.ones_like(numerator)
        numerator = n_siblings * self.child_hits - n_child * self.sibling_hits
        return numerator, np.maximum(self.sizes, 1)


def _needed(min_support: float, sizes: np.ndarray) -> int:
    """Active images a neuron needs among clusters of these sizes to join all their groups
    (count >= min_support * size, as build_groups decides)."""
    return int(sum(ceil(min_support * size) for size in sizes.tolist()))


def _counts(
    images: np.ndarray, cluster_of_slot: np.ndarray, n_clusters: int, active: np.ndarray
) -> np.ndarray:
    """(permutations, clusters, neurons): active counts of each cluster when image `images[r, s]`
    sits in slot s, one sparse one-hot product for the whole batch."""
    b, n = images.shape
    order = np.argsort(cluster_of_slot, kind="stable")
    # row (r, cluster) of the one-hot holds the images in that cluster's slots in permutation r
    indptr = np.concatenate([[0], np.cumsum(np.tile(np.bincount(cluster_of_slot, minlength=n_clusters), b))])
    one_hot = sp.csr_matrix(
        (np.ones(b * n, dtype=np.float32), images[:, order].ravel(), indptr),
        shape=(b * n_clusters, active.shape[0]),
    )
    return np.asarray(one_hot @ active).reshape(b, n_clusters, -1)


def _rows_matrix(rows: np.ndarray) -> sp.csr_matrix:
    """A bool (rows, columns) array as a float32 CSR matrix."""
    _, columns = np.nonzero(rows)
    indptr = np.concatenate([[0], np.cumsum(rows.sum(axis=1))])
    return sp.csr_matrix((np.ones(columns.shape[0], dtype=np.float32), columns, indptr), shape=rows.shape)


def _log_factorial(values: Sequence[int]) -> float:
    """log of the product of the factorials of `values`."""
    return sum(lgamma(value + 1) for value in values)


def _log_set_partitions(sizes: np.ndarray) -> float:
    """log of the number of ways to split sum(sizes) items into unlabelled blocks of these sizes."""
    values = sizes.tolist()
    return (
        _log_factorial([sum(values)])
        - _log_factorial(values)
        - _log_factorial(list(Counter(values).values()))
    )


def difference_tests(
    partitions: np.ndarray,
    mask: np.ndarray,
    min_support: float,
    rule: str = "intersect",
    exclude_generic: bool = False,
    permutations: int = 999,
    alpha: float = 0.05,
    seed: int = 0,
    statistic: Statistic = "support",
    sequential: bool = True,
) -> dict[tuple[int, int], DifferenceResult]:
    """The difference test of every cluster below the top level, keyed by (level, cluster) with
    level 0-based as in `neuron_core.groups`. `partitions` (images x levels, level 1 first) and
    `mask` (bool, images x neurons) are the groups stage's inputs, `min_support`, `rule` and
    `exclude_generic` its options. `sequential=False` compares every permutation (the reference
    for early stopping)."""
    if permutations < 1 or 1 / (permutations + 1) > alpha:
        raise ValueError(
            f"{permutations} permutations cannot give p <= alpha = {alpha}: "
            f"use at least {ceil(1 / alpha) - 1}."
        )
    if statistic not in ("support", "carriers"):
        raise ValueError(f"Unknown difference statistic {statistic!r}: use support or carriers.")
    mask = np.asarray(mask, dtype=bool)
    levels = build_groups(partitions, mask, min_support, rule, exclude_generic)
    # the neurons build_groups lets into groups: generic ones are decided on the whole collection
    candidates = (
        ~(mask.mean(axis=0) >= min_support) if exclude_generic else np.ones(mask.shape[1], dtype=bool)
    )
    test = _ChildTest(permutations, alpha, statistic, sequential)
    results: dict[tuple[int, int], DifferenceResult] = {}
    for level in range(len(levels) - 1):
        observed = difference_neurons(levels, level)
        for parent in range(levels[level + 1].sizes.shape[0]):
            subtree = ParentSubtree(partitions, mask, level, parent, min_support, rule, candidates)
            for child, cluster in enumerate(subtree.children.tolist()):
                rng = np.random.default_rng([seed, level, cluster])
                results[(level, cluster)] = test(subtree, child, observed[cluster], rng)
    return results


@dataclass(frozen=True)
class _ChildTest:
    permutations: int
    alpha: float
    statistic: Statistic
    sequential: bool

    def __call__(
        self, subtree: ParentSubtree, child: int, observed: np.ndarray, rng: np.random.Generator
    ) -> DifferenceResult:
        n_child = int(np.count_nonzero(subtree.child_of_slot == child))
        n_siblings = subtree.size - n_child
        min_p = max(1 / (self.permutations + 1), 1 / subtree.arrangements(child))
        if n_siblings == 0:
            return DifferenceResult("no siblings", None, None, None, None, None, 0, None, min_p)
        if not observed.any():
            return DifferenceResult("no difference", None, None, None, None, None, 0, None, min_p)
        selection = subtree.child(child)
        difference = observed[selection.neurons][None, :]
        assert difference.sum() == observed.sum()  # every difference neuron can be one
        identity = np.arange(subtree.size)[None, :]
        real = selection.summaries(identity, difference, selection.differences(identity)[1], carriers=True)
        size = int(real.sizes[0])
        values = (
            float(real.child_carriers[0] / n_child),
            float(real.sibling_carriers[0] / n_siblings),
            float(real.child_hits[0] / (n_child * size)),
            float(real.sibling_hits[0] / (n_siblings * size)),
        )
        value = values[0] - values[1] if self.statistic == "carriers" else values[2] - values[3]
        if min_p > self.alpha:
            return DifferenceResult("too few images", *values, value, 0, None, min_p)
        numerator, denominator = real.scores(self.statistic, n_child, n_siblings)
        stop_at = decided_after(self.permutations, self.alpha) if self.sequential else self.permutations + 1
        extreme, exhausted = self._extreme(
            selection, n_child, n_siblings, int(numerator[0]), int(denominator[0]), stop_at, rng
        )
        p_value, used = sequential_pvalue(extreme, stop_at)
        if exhausted:  # too few arrangements had a difference set to compare `permutations`
            min_p = max(min_p, 1 / (extreme.shape[0] + 1))
        return DifferenceResult("tested", *values, value, used, p_value, min_p)

    def _extreme(
        self,
        selection: ChildSelection,
        n_child: int,
        n_siblings: int,
        numerator: int,
        denominator: int,
        stop_at: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, bool]:
        """For each compared arrangement in the order drawn (those with a difference set, up to
        `permutations`): whether its statistic is at least the real arrangement's; drawing
        stops at the `stop_at`-th that is (Besag & Clifford). Also whether the draws ran out
        before `permutations` arrangements could be compared."""
        n = selection.subtree.size
        extreme: list[np.ndarray] = []
        compared = hits = drawn = 0
        batch, most = max(2 * stop_at, 32), _DRAWS_PER_PERMUTATION * self.permutations
        while compared < self.permutations and hits < stop_at and drawn < most:
            # Generator.random fills its array in order, so the permutations are the same
            # whatever the batch sizes: early stopping sees a prefix of the full run's.
            size = min(batch, selection.batch_cap(), most - drawn)
            perms = np.argsort(rng.random((size, n)), axis=1)
            summaries = selection.summaries(
                perms, *selection.differences(perms), self.statistic == "carriers"
            )
            num, den = summaries.scores(self.statistic, n_child, n_siblings)
            flags = (num * denominator >= numerator * den)[summaries.sizes > 0]
            flags = flags[: self.permutations - compared]
            extreme.append(flags)
            compared += flags.shape[0]
            hits += int(np.count_nonzero(flags))
            drawn += size
            batch *= 2
        return np.concatenate(extreme), compared < self.permutations and hits < stop_at
