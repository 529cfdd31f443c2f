import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.storage.stores import LocalStore
from shared.storage.thumbnails import (
    SIZE,
    ThumbnailIndex,
    extract_thumbnails,
    thumbnail_bytes,
    thumbnail_ids,
    thumbnail_name,
    write_thumbnails,
)
from tests.shared.counting_store import CountingStore


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


def test_a_small_image_is_never_enlarged_and_names_are_image_ids_only() -> None:
    tiny = Image.new("L", (40, 30), 128)  # not RGB either
    assert Image.open(io.BytesIO(thumbnail_bytes(tiny))).size == (40, 30)
    assert thumbnail_name("a" * 64) == f"{'a' * 64}.webp"
    with pytest.raises(ValueError):
        thumbnail_name("../manifest")


def _images(count: int) -> tuple[list[str], list[Image.Image]]:
    rng = np.random.default_rng(count)
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(count)]
    images = [Image.fromarray(rng.integers(0, 255, (60 + i, 90, 3), dtype=np.uint8)) for i in range(count)]
    return ids, images


def test_a_shard_is_one_zip_any_tool_opens_and_the_same_bytes_every_time(tmp_path: Path) -> None:
    ids, images = _images(5)
    store = LocalStore(tmp_path)
    write_thumbnails(store, 7, ids, images)
    assert sorted(store.list("thumbs/")) == ["thumbs/00007.zip"]  # one object for the shard
    first = (tmp_path / "thumbs" / "00007.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "thumbs" / "00007.zip") as pack:
        assert pack.namelist() == [f"{i}.webp" for i in ids]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in pack.infolist())
        assert pack.read(f"{ids[2]}.webp") == thumbnail_bytes(images[2])
    write_thumbnails(store, 7, ids, images)  # a retried step writes the very same pack
    assert (tmp_path / "thumbs" / "00007.zip").read_bytes() == first


def test_the_index_serves_every_thumbnail_with_one_read_each(tmp_path: Path) -> None:
    ids, images = _images(600)  # three shards of 256; the first's directory fills the tail read
    store = CountingStore(tmp_path)
    for shard, start in enumerate(range(0, 600, 256)):
        write_thumbnails(store, shard, ids[start : start + 256], images[start : start + 256])
    store.requests = 0
    index = ThumbnailIndex(store, "")
    assert store.requests == 6  # a size and a tail read per pack
    for image_id, image in zip(ids, images, strict=True):
        assert index.read(image_id) == thumbnail_bytes(image)
    assert store.requests == 6 + 600
    with pytest.raises(FileNotFoundError):
        index.read("f" * 64)
    with pytest.raises(ValueError):
        index.read("../manifest.json")


def test_a_large_pack_and_one_with_extra_fields_still_read(tmp_path: Path) -> None:
    """A directory larger than the tail read takes one more request; a member with an extra field
    (a zip tool's, not ours) takes a second read for its data."""
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(700)]  # a 80 KB directory
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as pack:
        for n, image_id in enumerate(ids):
            info = zipfile.ZipInfo(f"{image_id}.webp")
            info.extra = b"\x55\x54\x05\x00\x01\x00\x00\x00\x00" if n % 2 else b""
            pack.writestr(info, image_id.encode() * 3)
    (tmp_path / "thumbs").mkdir()
    (tmp_path / "thumbs" / "00000.zip").write_bytes(buffer.getvalue())
    index = ThumbnailIndex(LocalStore(tmp_path), "")
    assert len(index.spans) == 700
    assert all(index.read(image_id) == image_id.encode() * 3 for image_id in ids)


def test_results_made_before_the_packs_still_serve_and_unpack(tmp_path: Path) -> None:
    """Single `thumbs/{id}.webp` files (results written before the packs) and packs, side by side."""
    ids, images = _images(4)
    store = LocalStore(tmp_path / "out")
    write_thumbnails(store, 0, ids[:2], images[:2])
    for image_id, image in zip(ids[2:], images[2:], strict=True):
        store.put_bytes(f"thumbs/{image_id}.webp", thumbnail_bytes(image))
    index = ThumbnailIndex(store, "")
    assert [index.read(i) for i in ids] == [thumbnail_bytes(image) for image in images]
    assert thumbnail_ids(tmp_path / "out" / "thumbs") == set(ids)
    assert extract_thumbnails(tmp_path / "out" / "thumbs", tmp_path / "unpacked") == set(ids)
    assert all((tmp_path / "unpacked" / f"{i}.webp").read_bytes() == index.read(i) for i in ids)
