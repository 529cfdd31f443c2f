"""`input_check.json`: how well the target model recognises the job's labelled images with the
input transform it was given, what a probe of other transforms gave, and the warnings that
follow (hierarchy.json's `warnings`, and the job's on GET /v1/jobs/{id})."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from neuron_atlas_client.contracts.base import Contract, Count, Probability
from neuron_atlas_client.contracts.models import Preprocessing

WarningKind = Literal["input-size", "normalisation", "preprocessing", "head", "accuracy", "labels"]


class RunWarning(Contract):
    """Something about the run that makes its result doubtful; `--strict` (options.strict) makes
    it fail the run instead."""

    kind: WarningKind = Field(
        description="input-size, normalisation or preprocessing (both): another input transform "
        "lets the model recognise the labelled images far better; head: the labels do not match "
        "the model's outputs; accuracy: near chance with no better transform found; labels: the "
        "labels are not class indices, so nothing could be checked."
    )
    message: str = Field(description="What was found, with the numbers.")
    fix: str = Field(description="What to do: the exact option or flag that fixes it, where known.")


class ProbeResult(Contract):
    preprocessing: Preprocessing
    top1_accuracy: Probability = Field(description="On the probe's images.")


class InputCheck(Contract):
    """The target model's top-1 accuracy on the labelled images (their `label`: its class index)."""

    labelled_images: Count = Field(description="Decoded images whose label is a class index.")
    top1_accuracy: Probability | None = Field(
        description="With the preprocessing used, from the activation pass itself; null where "
        "the model's output is not a classifier's."
    )
    chance: Probability | None = Field(description="1 / the head's outputs (or the labels' classes).")
    probe_images: Count = Field(description="Labelled images in the probe (0: no probe ran).")
    probe: list[ProbeResult] = Field(
        description="Top-1 accuracy on the probe's images at each input transform tried, the one used first."
    )
    warnings: list[RunWarning]
