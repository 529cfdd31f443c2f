import io

import numpy as np
import pytest
from PIL import Image

from shared.storage.thumbnails import SIZE, thumbnail_bytes, thumbnail_key


def test_a_thumbnail_is_a_webp_within_160_pixels_that_looks_like_its_image() -> None:
    rng = np.random.default_rng(0)
    left = np.full((480, 320, 3), (200, 30, 30), dtype=np.uint8)
    right = np.full((480, 320, 3), (30, 30, 200), dtype=np.uint8)
    pixels = np.concatenate([left, right], axis=1) + rng.integers(0, 8, (480, 640, 3), dtype=np.uint8)
    small = Image.open(io.BytesIO(thumbnail_bytes(Image.fromarray(pixels))))
    assert small.format == "WEBP" and small.size == (SIZE, 120)
    halves = np.asarray(small.convert("RGB"), dtype=float)
    # each half keeps its colour (box-reduced, then one bilinear step: no aliasing, no smear)
    assert np.abs(halves[:, :70].mean(axis=(0, 1)) - (203, 33, 33)).max() < 12
    assert np.abs(halves[:, 90:].mean(axis=(0, 1)) - (33, 33, 203)).max() < 12


def test_a_small_image_is_never_enlarged_and_keys_stay_under_thumbs() -> None:
    tiny = Image.new("L", (40, 30), 128)  # not RGB either
    assert Image.open(io.BytesIO(thumbnail_bytes(tiny))).size == (40, 30)
    assert thumbnail_key("a" * 64) == f"thumbs/{'a' * 64}.webp"
    with pytest.raises(ValueError):
        thumbnail_key("../manifest")
