"""Each image is decoded once per uncertainty run, within a memory budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from neuron_core.hooks import preprocess
from services.uncertainty.model_inputs import ModelInputs

CPU = torch.device("cpu")


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)) for i in range(n)]


class CountingReader:
    def __init__(self, pictures: list[Image.Image]) -> None:
        self.pictures = pictures
        self.reads: list[int] = []

    def __call__(self, rows: Sequence[int]) -> list[Image.Image]:
        self.reads.extend(rows)
        return [self.pictures[r] for r in rows]


def test_rows_are_decoded_once_and_give_the_transform_exactly() -> None:
    pictures = images(20)
    reader = CountingReader(pictures)
    inputs = ModelInputs(reader, CPU)
    first = inputs([3, 1, 3, 19])
    assert torch.equal(first, preprocess([pictures[i] for i in (3, 1, 3, 19)]))
    inputs(range(20))
    inputs([19, 0])
    assert sorted(reader.reads) == list(range(20))  # every row once, the repeat of 3 included


def test_rows_past_the_memory_budget_are_decoded_again() -> None:
    reader = CountingReader(images(10))
    crop_bytes = 224 * 224 * 3
    inputs = ModelInputs(reader, CPU, budget_bytes=4 * crop_bytes)
    inputs(range(10))
    inputs(range(10))
    assert len(reader.reads) == 10 + 6  # four kept, six decoded twice
