"""The caption shard entry over a store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from neuron_atlas_client.options import PipelineOptions
from services.caption.captioning import Captioner
from services.caption.stage import run_caption_shard, shard_to_caption
from shared.pipeline.ingest import decode_shard
from shared.storage import artifacts
from shared.storage.stores import LocalStore, get_json


def _entry(store: LocalStore, name: str, data: bytes, caption: str | None) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    store.put_bytes(artifacts.image_key(digest, "png"), data)
    return {"id": digest, "file_name": name, "format": "png", "width": 1, "height": 1, "caption": caption}


def test_shard_step_uses_brought_captions_and_lists_undecodable_images(
    sample_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path)
    pngs = sorted(sample_dir.glob("*.png"))[:3]
    entries = [_entry(store, p.name, p.read_bytes(), f"caption {i}") for i, p in enumerate(pngs)]
    entries.append(_entry(store, "broken.png", pngs[0].read_bytes()[:60], "never used"))
    manifest = {"images": entries, "skipped": []}

    def no_captioner() -> Captioner:
        raise AssertionError("every image brought a caption: no captioner may be loaded")

    options = PipelineOptions(shard_size=2)
    images = decode_shard(manifest, 1, options.shard_size, artifacts.stored_image_reader(store))
    assert run_caption_shard(store, manifest, images, options, no_captioner) == 2
    shard = get_json(store, artifacts.captions_key(1))
    assert shard["captions"] == [{"image_id": entries[2]["id"], "caption": "caption 2", "source": "provided"}]
    assert [s["file_name"] for s in shard["skipped"]] == ["broken.png"]
    assert shard["model"] is None


def test_a_shard_whose_captions_were_all_provided_is_not_read_or_decoded(
    sample_dir: Path, tmp_path: Path
) -> None:
    """The caption worker used to decode every image of a shard, captions provided or not."""
    store = LocalStore(tmp_path)
    pngs = sorted(sample_dir.glob("*.png"))[:3]
    entries = [_entry(store, p.name, p.read_bytes(), f"caption {i}") for i, p in enumerate(pngs)]
    entries.append(_entry(store, "broken.png", pngs[0].read_bytes()[:60], "never decoded here"))
    manifest = {"images": entries, "skipped": []}
    reads: list[str] = []

    def read_bytes(entry: dict[str, Any]) -> bytes:
        reads.append(entry["file_name"])
        return store.get_bytes(artifacts.manifest_image_key(entry))

    shard = shard_to_caption(manifest, 0, 4, read_bytes)
    assert reads == [] and shard.images == [] and shard.skipped == []
    assert [e["file_name"] for e in shard.kept] == [e["file_name"] for e in entries]
    # one image without a caption: the shard is decoded, and the broken image found here too
    entries[1] = {**entries[1], "caption": None}
    shard = shard_to_caption({"images": entries, "skipped": []}, 0, 4, read_bytes)
    assert sorted(reads) == sorted(e["file_name"] for e in entries)
    assert len(shard.images) == 3 and [s["file_name"] for s in shard.skipped] == ["broken.png"]


def test_the_activation_branch_decides_which_images_are_usable(sample_dir: Path, tmp_path: Path) -> None:
    """With no decoding in the caption branch, an undecodable image is left out of the caption
    rows that every later stage reads, and listed as skipped, from the activation branch's list."""
    store = LocalStore(tmp_path)
    pngs = sorted(sample_dir.glob("*.png"))[:2]
    entries = [_entry(store, p.name, p.read_bytes(), f"caption {i}") for i, p in enumerate(pngs)]
    entries.append(_entry(store, "broken.png", pngs[0].read_bytes()[:60], "never decoded here"))
    manifest = {"images": entries, "skipped": []}
    store.put_bytes(artifacts.MANIFEST, json.dumps(manifest).encode())

    def no_captioner() -> Captioner:
        raise AssertionError("every image brought a caption")

    options = PipelineOptions(shard_size=8)
    reader = artifacts.stored_image_reader(store)
    run_caption_shard(store, manifest, shard_to_caption(manifest, 0, 8, reader), options, no_captioner)
    assert len(artifacts.read_caption_shards(store)[0]) == 3  # nothing decoded yet
    artifacts.write_undecodable(store, 0, decode_shard(manifest, 0, 8, reader).skipped)
    rows, skipped = artifacts.read_caption_shards(store)
    assert [r["image_id"] for r in rows] == [e["id"] for e in entries[:2]]
    assert [s["file_name"] for s in skipped] == ["broken.png"] and "decoded" in skipped[0]["reason"]
