"""Tiny models and images for the uncertainty tests: built here, never downloaded."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(12)]


@pytest.fixture(scope="module")
def read_images(images: list[Image.Image]) -> Callable[[Sequence[int]], list[Image.Image]]:
    return lambda rows: [images[i] for i in rows]
