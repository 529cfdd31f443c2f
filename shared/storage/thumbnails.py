"""Small WebP thumbnails for the explorer, `thumbs/{image_id}.webp`, made from an image that a
shard step has already decoded (so no image is decoded twice for them)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from shared.storage.stores import Store

SIZE = 160  # the longer side, in pixels
QUALITY = 70
# libwebp's effort, 0 to 6: 1 encodes a 160-pixel thumbnail in a third of the time of 4 (0.6 ms
# against 1.7 ms on a 2-core CPU) for 20% more bytes (1.2 KB against 1.0 KB), so the
# activation stage's thumbnails cost a few percent of its forward pass, not ten.
METHOD = 1
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")


def thumbnail_key(image_id: str) -> str:
    """Where the thumbnail of image `image_id` (its sha256) lives; anything else is refused, so a
    key built from a request can never leave `thumbs/`."""
    if not _IMAGE_ID.match(image_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return f"thumbs/{image_id}.webp"


def thumbnail_bytes(image: Image.Image, size: int = SIZE) -> bytes:
    """The image shrunk to fit `size` x `size` (never enlarged), as WebP."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = min(1.0, size / max(rgb.size))
    small = rgb.resize(
        (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
        Image.Resampling.BILINEAR,
        # Box-average by the whole factor first (`Image.reduce`, every pixel counted, so no
        # aliasing), then a bilinear step of less than 2x: half the time of reducing to twice
        # the size first, and the same look at 160 pixels.
        reducing_gap=1.0,
    )
    buffer = io.BytesIO()
    small.save(buffer, format="WEBP", quality=QUALITY, method=METHOD)
    return buffer.getvalue()


PUT_THREADS = 8


def write_thumbnails(store: Store, image_ids: Sequence[str], images: Sequence[Image.Image]) -> None:
    """One thumbnail per decoded image; rewriting is harmless, so the step stays idempotent.
    Encoded here, then written on a few threads: each write to object storage waits about 3 ms
    for its answer, 8 s for a job of 2,500 images one after another."""
    encoded = [(thumbnail_key(i), thumbnail_bytes(image)) for i, image in zip(image_ids, images, strict=True)]
    with ThreadPoolExecutor(PUT_THREADS) as pool:
        for _ in pool.map(lambda item: store.put_bytes(*item), encoded):
            pass  # re-raises the first failed write
