"""A suite job's uploaded images, as the workers read them: one pack per shard,
`images/{shard}.zip` (shared/storage/packs.py), written by the gateway once the manifest's order
is known (services/gateway/uploads.py). A shard's decoding reads its pack in a window or two; a
single image (the uncertainty stage's samples, the input check) takes one ranged read. Jobs
submitted before the packs hold one object per image, `images/{sha256}.{ext}`: a shard without
a pack is read so."""

from __future__ import annotations

from collections.abc import Callable
from threading import Lock
from typing import Any

from shared.storage import artifacts
from shared.storage.packs import PackReader, Span, pack_index, read_member
from shared.storage.stores import Store

ImageReader = Callable[[dict[str, Any]], bytes]


class StoredImages:
    """The images of one job's manifest, `shard_size` to a pack."""

    def __init__(self, store: Store, manifest: dict[str, Any], shard_size: int) -> None:
        self.store, self.manifest, self.shard_size = store, manifest, shard_size
        self._spans: dict[int, dict[str, Span] | None] = {}  # None: no pack, one object per image
        self._lock = Lock()
        self._position: dict[str, int] | None = None

    def _pack(self, shard: int) -> dict[str, Span] | None:
        with self._lock:
            if shard not in self._spans:
                try:
                    self._spans[shard] = pack_index(self.store, artifacts.images_pack_key(shard))
                except FileNotFoundError:
                    self._spans[shard] = None
            return self._spans[shard]

    def shard_reader(self, shard: int) -> ImageReader:
        """Bytes of the entries of shard `shard`, read in windows of its pack."""
        spans = self._pack(shard)
        if spans is None:
            return artifacts.stored_image_reader(self.store)
        reader = PackReader(self.store, spans)
        return lambda entry: reader.read(artifacts.image_member(entry))

    def read(self, entry: dict[str, Any]) -> bytes:
        """One entry's bytes, wherever in the manifest it is."""
        if self._position is None:
            self._position = {image["id"]: i for i, image in enumerate(self.manifest["images"])}
        spans = self._pack(self._position[entry["id"]] // self.shard_size)
        if spans is None:
            return artifacts.stored_image_reader(self.store)(entry)
        name = artifacts.image_member(entry)
        if name not in spans:
            raise FileNotFoundError(f"no image {name} in its shard's pack")
        return read_member(self.store, spans[name], name)
