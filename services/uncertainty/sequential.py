"""Sequential Monte Carlo p-values (Besag & Clifford 1991), shared by every test that compares
an observed statistic with random draws of its null (random neuron sets, permutations).

A test stops drawing as soon as `decided_after(draws, alpha)` draws were at least as extreme as
the observed value: p <= alpha is then out of reach with `draws` draws. Its p-value is then
h / l (h such draws among the first l), which is exact too; a test that can still reach alpha
draws them all and gets (1 + extreme draws) / (1 + draws). So every decision at alpha is the one
all draws would give. Pure numpy: no service code is imported here.
"""

from __future__ import annotations

import numpy as np


def decided_after(draws: int, alpha: float) -> int:
    """The number of draws at least as extreme as the observed value after which p <= alpha is
    out of reach with `draws` draws: the least g with (g + 1) / (draws + 1) > alpha."""
    g = 0
    while (g + 1) / (draws + 1) <= alpha:
        g += 1
    return max(g, 1)


def sequential_pvalue(extreme: np.ndarray, stop_at: int) -> tuple[float, int]:
    """The p-value and the number of draws it used, from `extreme` (bool, one per draw in the
    order drawn: at least as extreme as the observed value). Besag and Clifford's h / l where
    the `stop_at`-th extreme draw came at the l-th; otherwise (1 + extreme draws) / (1 + draws)."""
    hits = np.flatnonzero(extreme)
    if hits.shape[0] >= stop_at:
        used = int(hits[stop_at - 1]) + 1
        return stop_at / used, used
    return (1 + hits.shape[0]) / (extreme.shape[0] + 1), int(extreme.shape[0])
