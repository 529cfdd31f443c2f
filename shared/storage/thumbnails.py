"""Small WebP thumbnails for the explorer, made from an image that a shard step has already
decoded (so no image is decoded twice for them), and kept one zip per shard:
`thumbs/{shard}.zip`, a member `{image_id}.webp` per decodable image, stored uncompressed.

One object per shard, not one per image: in the suite each object is a request to object
storage, about 2.2 ms of CPU on the client and the server together (docs/performance.md, 'The
suite'), which on a 2-core machine was a third of what the suite spent over the embedded run.
A zip because any tool opens it; uncompressed, so the gateway serves one thumbnail with one
ranged read of the pack (`ThumbnailIndex`), and the static report unpacks them
(`extract_thumbnails`). Results made before the packs hold `thumbs/{image_id}.webp`, one file
each; both readers take those too."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from shared.storage.stores import Store

SIZE = 160  # the longer side, in pixels
QUALITY = 70
# libwebp's effort, 0 to 6: 1 encodes a 160-pixel thumbnail in a third of the time of 4 (0.6 ms
# against 1.7 ms on a 2-core CPU) for 20% more bytes (1.2 KB against 1.0 KB), so the
# activation stage's thumbnails cost a few percent of its forward pass, not ten.
METHOD = 1
PREFIX = "thumbs/"
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
# A fixed member time: a shard's pack is the same bytes on every run, embedded or in the suite.
_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


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
    """A zip of `(image_id, webp)` pairs, stored uncompressed (WebP does not compress further)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as pack:
        for image_id, data in thumbnails:
            pack.writestr(zipfile.ZipInfo(thumbnail_name(image_id), _MEMBER_TIME), data)
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


class RangeStore(Protocol):
    """What serving one thumbnail out of a pack needs of a store (`S3Store`, `LocalStore`)."""

    def size(self, key: str) -> int: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...
    def get_bytes(self, key: str) -> bytes: ...
    def list(self, prefix: str) -> Iterator[str]: ...


@dataclass(frozen=True)
class Span:
    """Where one thumbnail's bytes lie: its pack, and the member's local header's offset in it."""

    key: str
    header: int
    size: int


_END = struct.Struct("<4s4H2LH")  # end of central directory record
_ENTRY = struct.Struct("<4s6H3L5H2L")  # central directory file header
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header
_TAIL = 64 * 1024  # read at once from a pack's end: its directory, for up to ~500 members


def pack_index(store: RangeStore, key: str) -> dict[str, Span]:
    """The members of the pack at `key` (image id -> span), from its central directory: one
    request for the size and one for the last 64 KB, which hold the directory of a shard of up
    to about 500 images (a larger one takes one more read)."""
    size = store.size(key)
    start = max(0, size - _TAIL)
    tail = store.get_range(key, start, size - start)
    at = len(tail) - _END.size  # our packs carry no archive comment
    if tail[at : at + 4] != b"PK\x05\x06":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0:
        raise ValueError(f"{key} is not a zip")
    _, _, _, _, count, directory_size, directory_at, _ = _END.unpack_from(tail, at)
    if directory_at >= start:
        directory = tail[directory_at - start : directory_at - start + directory_size]
    else:
        directory = store.get_range(key, directory_at, directory_size)
    index, offset = {}, 0
    for _ in range(count):
        fields = _ENTRY.unpack_from(directory, offset)
        signature, method, packed = fields[0], fields[4], fields[8]
        name_length, extra_length, comment_length, header = fields[10], fields[11], fields[12], fields[16]
        name = directory[offset + _ENTRY.size : offset + _ENTRY.size + name_length].decode()
        offset += _ENTRY.size + name_length + extra_length + comment_length
        if signature != b"PK\x01\x02" or method != zipfile.ZIP_STORED:
            raise ValueError(f"{key} is not a thumbnail pack (member {name!r})")
        index[name.removesuffix(".webp")] = Span(key, header, packed)
    return index


class ThumbnailIndex:
    """Where each thumbnail of one result lies, read once from its packs' directories (8 packs
    at once), then one ranged read per thumbnail. An image in no pack is looked for as the single
    file of a result made before them."""

    def __init__(self, store: RangeStore, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        packs = [key for key in store.list(prefix + PREFIX) if key.endswith(".zip")]
        self.spans: dict[str, Span] = {}
        with ThreadPoolExecutor(8) as pool:
            for index in pool.map(lambda key: pack_index(store, key), packs):
                self.spans.update(index)

    def read(self, image_id: str) -> bytes:
        """The thumbnail's WebP bytes; `FileNotFoundError` when the result has none for it,
        `ValueError` when `image_id` is no image id."""
        name = thumbnail_name(image_id)
        span = self.spans.get(image_id)
        if span is None:
            return self.store.get_bytes(self.prefix + PREFIX + name)
        # the local header, then the data: the name is the directory's, and our packs carry no
        # extra field, so one read holds both; a pack from elsewhere with one takes a second
        local = self.store.get_range(span.key, span.header, _LOCAL.size + len(name) + span.size)
        name_length, extra_length = _LOCAL.unpack_from(local)[9:11]
        start = _LOCAL.size + name_length + extra_length
        if start + span.size > len(local):
            return self.store.get_range(span.key, span.header + start, span.size)
        return local[start : start + span.size]
