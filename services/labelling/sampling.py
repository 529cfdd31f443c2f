"""Which captions of a large cluster go into its prompt: the ones nearest the centroid (what is
typical) and then the ones farthest from what was already picked (the cluster's spread), until
a token budget is spent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def estimate_tokens(text: str) -> int:
    """About four characters a token for English BPE vocabularies, plus the line's framing.

    An estimate on purpose: tokenizers differ per endpoint and the budget only has to bound
    the prompt, not hit it exactly."""
    return math.ceil(len(text) / 4) + 3


@dataclass(frozen=True)
class CaptionSample:
    lines: list[tuple[str, int]]  # (caption, how many members read exactly so), in prompt order
    members: int  # members whose caption is among the lines


def sample_captions(captions: Sequence[str], embeddings: np.ndarray, token_budget: int) -> CaptionSample:
    """Distinct captions within `token_budget`: half the budget for the nearest to the centroid,
    the rest by farthest-point picks for spread. Deterministic (ties go to the earlier caption)."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, caption in enumerate(captions):
        counts[caption] = counts.get(caption, 0) + 1
        first.setdefault(caption, i)
    distinct = list(first)
    vectors = embeddings[[first[c] for c in distinct]].astype(np.float64)
    centroid = embeddings.mean(axis=0)
    nearness = vectors @ centroid
    order = sorted(range(len(distinct)), key=lambda i: (-nearness[i], i))
    cost = [estimate_tokens(distinct[i]) for i in range(len(distinct))]

    picked: list[int] = []
    spent = 0
    for i in order:  # typical ones first, up to half the budget
        if spent + cost[i] > token_budget / 2 and picked:
            break
        picked.append(i)
        spent += cost[i]
    chosen = np.zeros(len(distinct), dtype=bool)
    chosen[picked] = True
    # Distance of every caption to its nearest picked one; pick the farthest that still fits.
    nearest = (1.0 - vectors @ vectors[picked].T).min(axis=1)
    while True:
        fits = ~chosen & (np.asarray(cost) + spent <= token_budget)
        if not fits.any():
            break
        candidate = int(np.argmax(np.where(fits, nearest, -np.inf)))
        chosen[candidate] = True
        picked.append(candidate)
        spent += cost[candidate]
        nearest = np.minimum(nearest, 1.0 - vectors @ vectors[candidate])
    lines = [(distinct[i], counts[distinct[i]]) for i in picked]
    return CaptionSample(lines, sum(n for _, n in lines))


def format_captions(sample: CaptionSample) -> str:
    return "\n".join(f"- {text} [{n}]" if n > 1 else f"- {text}" for text, n in sample.lines)
