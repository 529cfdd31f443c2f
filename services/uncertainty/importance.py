"""Importance versus random neurons: the reported group zeroed on the concept's images, against
size-matched sets drawn uniformly from each layer (`ablation.importance_check`, the exact rank test
the stage called its causal check before).

Its null is that the group is as important as uniformly drawn neurons. Most uniformly drawn
neurons are barely active on any image, so every strongly active set rejects it: a random set
of images passes as often as a concept (issue 23). It says how much the group's activity
carries, and is named so; `specificity.py` holds the causal test. It runs with
`--uncertainty-budget full` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuron_atlas_client.contracts.uncertainty import Importance, ImportanceResult
from neuron_core.neuron_axis import LayerInfo
from services.uncertainty import ablation as abl
from services.uncertainty.model_inputs import ModelInputs

NULL = (
    "The group is as important as the same number of neurons per layer drawn uniformly (which "
    "are rarely active): any strongly active set rejects it."
)


def importance_test(
    model: abl.AblatedModel,
    inputs: ModelInputs,
    rows: np.ndarray,
    group: np.ndarray,
    layers: Sequence[LayerInfo],
    random_sets: int,
    max_images: int,
    alpha: float,
    seed: int,
    level: int,
    index: int,
    batch_size: int,
) -> Importance:
    """The test on at most `max_images` of the concept's images (a seeded choice)."""
    rng = np.random.default_rng([seed, level + 1, index])  # as the causal check was seeded
    images = rows
    if images.shape[0] > max_images:
        images = np.sort(rng.choice(images, max_images, replace=False))
    result = abl.importance_check(
        model, inputs(images.tolist()), group, layers, random_sets, alpha, rng, batch_size
    )
    return Importance(
        status="tested",
        note="tested",
        result=ImportanceResult(
            images=result.images,
            random_sets=result.random_sets,
            group_drop=round(result.group_drop, 6),
            random_drop_mean=round(result.random_drop_mean, 6),
            random_drop_sd=round(result.random_drop_sd, 6),
            effect=round(result.effect, 6),
            interval=[round(v, 6) for v in result.interval] if result.interval else None,
            p_value=round(result.p_value, 6),
        ),
    )


def importance_images(size: int, max_images: int) -> int:
    return min(size, max_images)
