"""The caption shard entry over a store."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from services.caption.captioning import Captioner
from services.caption.stage import run_caption_shard
from shared import artifacts
from shared.ingest import decode_shard
from shared.options import PipelineOptions
from shared.storage import LocalStore, get_json


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
