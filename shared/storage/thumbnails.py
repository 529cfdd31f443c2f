"""Small WebP thumbnails for the explorer, made from an image that a shard step has already
decoded (so no image is decoded twice for them), and kept one zip per shard:
`thumbs/{shard}.zip`, a member `{image_id}.webp` per decodable image, stored uncompressed.

One object per shard, not one per image: in the suite each object is a request to object
storage (shared/storage/packs.py). The gateway serves one thumbnail with one ranged read of its
pack (`ThumbnailIndex`); the static report unpacks them (`extract_thumbnails`). Results made
before the packs hold `thumbs/{image_id}.webp`, one file each; both readers take those too."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from PIL import Image

from shared.storage.packs import RangeStore, Span, pack_index, read_member, write_pack
from shared.storage.stores import Store

SIZE = 160  # the longer side, in pixels
QUALITY = 70
# libwebp's effort, 0 to 6: 1 encodes a 160-pixel thumbnail in a third of the time of 4 (0.6 ms
# against 1.7 ms on a 2-core CPU) for 20% more bytes (1.2 KB against 1.0 KB), so the
# activation stage's thumbnails cost a few percent of its forward pass, not ten.
METHOD = 1
PREFIX = "thumbs/"
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")


def thumbnail_name(image_id: str) -> str:
    """The member (or, in results made before the packs, the file under `thumbs/`) that holds the
    thumbnail of image `image_id` (its sha256); anything else is refused, so a name built from a
    request can never leave `thumbs/`."""
    if not _IMAGE_ID.match(image_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return f"{image_id}.webp"


def pack_key(shard: int) -> str:
    return f"{PREFIX}{shard:05d}.zip"


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


def pack_thumbnails(thumbnails: Sequence[tuple[str, bytes]]) -> bytes:
    """A pack (shared/storage/packs.py) of `(image_id, webp)` pairs."""
    buffer = io.BytesIO()
    write_pack(buffer, ((thumbnail_name(image_id), data) for image_id, data in thumbnails))
    return buffer.getvalue()


def write_thumbnails(
    store: Store, shard: int, image_ids: Sequence[str], images: Sequence[Image.Image]
) -> None:
    """One thumbnail per decoded image of shard `shard`, as its pack; rewriting is harmless, so
    the step stays idempotent."""
    thumbnails = [(i, thumbnail_bytes(image)) for i, image in zip(image_ids, images, strict=True)]
    store.put_bytes(pack_key(shard), pack_thumbnails(thumbnails))


def folder_thumbnails(thumbs: Path) -> Iterator[tuple[str, bytes]]:
    """Every `(image_id, webp)` of a result folder's `thumbs/`: its packs, and the single files of
    a result made before them."""
    for path in sorted(thumbs.glob("*.zip")):
        with zipfile.ZipFile(path) as pack:
            for name in pack.namelist():
                image_id = name.removesuffix(".webp")
                if _IMAGE_ID.match(image_id) and name.endswith(".webp"):
                    yield image_id, pack.read(name)
    for path in sorted(thumbs.glob("*.webp")):
        if _IMAGE_ID.match(path.stem):
            yield path.stem, path.read_bytes()


def thumbnail_ids(thumbs: Path) -> set[str]:
    """The image ids that a result folder's `thumbs/` holds a thumbnail of (its packs' names)."""
    ids: set[str] = set()
    for path in thumbs.glob("*.zip"):
        with zipfile.ZipFile(path) as pack:
            ids.update(name.removesuffix(".webp") for name in pack.namelist() if name.endswith(".webp"))
    ids.update(path.stem for path in thumbs.glob("*.webp"))
    return {image_id for image_id in ids if _IMAGE_ID.match(image_id)}


def extract_thumbnails(thumbs: Path, dest: Path) -> set[str]:
    """Unpack a result folder's thumbnails into `dest/{image_id}.webp` (the static report, which a
    browser reads from disk, file by file); returns the image ids."""
    dest.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    for image_id, data in folder_thumbnails(thumbs):
        (dest / thumbnail_name(image_id)).write_bytes(data)
        written.add(image_id)
    return written


class ThumbnailStore(RangeStore, Protocol):
    """What serving one thumbnail needs of a store (`S3Store`, `LocalStore`)."""

    def get_bytes(self, key: str) -> bytes: ...
    def list(self, prefix: str) -> Iterator[str]: ...


class ThumbnailIndex:
    """Where each thumbnail of one result lies, read once from its packs' directories (8 packs
    at once), then one ranged read per thumbnail. An image in no pack is looked for as the single
    file of a result made before them."""

    def __init__(self, store: ThumbnailStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        packs = [key for key in store.list(prefix + PREFIX) if key.endswith(".zip")]
        self.spans: dict[str, Span] = {}
        with ThreadPoolExecutor(8) as pool:
            for index in pool.map(lambda key: pack_index(store, key), packs):
                self.spans.update({name.removesuffix(".webp"): span for name, span in index.items()})

    def read(self, image_id: str) -> bytes:
        """The thumbnail's WebP bytes; `FileNotFoundError` when the result has none for it,
        `ValueError` when `image_id` is no image id."""
        name = thumbnail_name(image_id)
        span = self.spans.get(image_id)
        if span is None:
            return self.store.get_bytes(self.prefix + PREFIX + name)
        return read_member(self.store, span, name)
