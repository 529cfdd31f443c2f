"""A suite job's uploaded images as the workers read them: a shard's pack in a window or two,
one image with one ranged read, and jobs submitted before the packs (one object per image)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from shared.storage import artifacts
from shared.storage.packs import PackReader, pack_index, write_pack
from shared.storage.stored_images import StoredImages
from shared.storage.stores import LocalStore
from tests.shared.counting_store import CountingStore


def _manifest(count: int, size: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    data = {str(i): hashlib.sha256(str(i).encode()).digest() * (size // 32) for i in range(count)}
    images = [
        {"id": hashlib.sha256(blob).hexdigest(), "file_name": f"{name}.png", "format": "png"}
        for name, blob in data.items()
    ]
    return {"images": images}, {image["id"]: data[str(i)] for i, image in enumerate(images)}


def _pack(store: LocalStore, manifest: dict[str, Any], blobs: dict[str, bytes], shard_size: int) -> None:
    images = manifest["images"]
    for shard in range(artifacts.shard_count(len(images), shard_size)):
        entries = images[shard * shard_size : (shard + 1) * shard_size]
        path = store.root / "staging.zip"
        write_pack(path, [(artifacts.image_member(e), blobs[e["id"]]) for e in entries])
        store.put_file(artifacts.images_pack_key(shard), path)
        path.unlink()


def test_a_shard_of_small_images_is_three_requests(tmp_path: Path) -> None:
    manifest, blobs = _manifest(600, 32 * 1024)  # 256 images of 32 KB: 8 MB, two windows
    store = CountingStore(tmp_path)
    _pack(store, manifest, blobs, 256)
    images = StoredImages(store, manifest, 256)
    for shard in range(3):
        store.requests = 0
        read = images.shard_reader(shard)
        entries = manifest["images"][shard * 256 : (shard + 1) * 256]
        assert [read(e) for e in entries] == [blobs[e["id"]] for e in entries]
        assert store.requests <= 4, shard  # the directory (2), then a window or two
    store.requests = 0
    one = manifest["images"][300]
    assert images.read(one) == blobs[one["id"]] and store.requests == 1  # its pack's index is known


def test_large_images_hold_at_most_two_windows(tmp_path: Path) -> None:
    manifest, blobs = _manifest(6, 3 * 1024**2)  # 3 MB each: one or two to a 4 MB window
    store = LocalStore(tmp_path)
    _pack(store, manifest, blobs, 6)
    reader = PackReader(store, pack_index(store, artifacts.images_pack_key(0)), window=4 * 1024**2)
    for entry in manifest["images"]:
        assert reader.read(artifacts.image_member(entry)) == blobs[entry["id"]]
    assert reader.requests == 6 and len(reader._windows) == 2
    with pytest.raises(FileNotFoundError):
        reader.read("f" * 64 + ".png")


def test_a_job_from_before_the_packs_reads_its_single_objects(tmp_path: Path) -> None:
    manifest, blobs = _manifest(5, 100)
    store = LocalStore(tmp_path)
    for entry in manifest["images"]:
        store.put_bytes(artifacts.manifest_image_key(entry), blobs[entry["id"]])
    images = StoredImages(store, manifest, 2)
    read = images.shard_reader(1)
    assert [read(e) for e in manifest["images"][2:4]] == [blobs[e["id"]] for e in manifest["images"][2:4]]
    assert images.read(manifest["images"][4]) == blobs[manifest["images"][4]["id"]]
