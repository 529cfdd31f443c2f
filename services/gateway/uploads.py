"""Turn a submission's files (uploads, zip/tar archives, or objects under a bucket prefix) into a
job's manifest, exactly as the embedded ingest would for the same files in a folder (same file
names, order, skip reasons and captions), and its images, one pack per shard
(`images/{shard}.zip`, shared/storage/stored_images.py). Each image is kept in a spool folder on
the gateway's disk as it arrives (content-addressed, so a file sent twice is kept once) and
packed once the manifest has put them in order: a pack per shard is one request to object
storage where an object per image was one each, and the workers' reads shrink alike.

Archives are read defensively: a bounded number of entries and expanded bytes, and any entry
with a path trick (absolute, `..`, backslash, drive letter) or a link refuses the whole
submission. Plain functions, no HTTP: the router calls them in a worker thread.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from neuron_atlas_client.errors import InputError
from shared.pipeline.ingest import (
    METADATA_NAMES,
    ImageRecord,
    SkippedFile,
    captions_from_text,
    duplicate,
    inspect_image,
    labels_from_text,
    manifest_document,
    no_usable_images,
    sha256_bytes,
)
from shared.storage import artifacts
from shared.storage.packs import write_pack

log = logging.getLogger(__name__)

_DRIVE = re.compile(r"^[A-Za-z]:")
_TAR_MAGIC_OFFSET = 257
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz (tar inside)


class LimitExceeded(InputError):
    kind = "limit-exceeded"


class UnsafeArchive(InputError):
    kind = "unsafe-archive"


@dataclass(frozen=True)
class Limits:
    max_images: int
    max_image_pixels: int
    max_archive_entries: int
    max_expanded_bytes: int
    max_file_bytes: int = 160 * 1024**2


# An archive entry over 1 MiB that expands more than this is skipped unread: images are already
# compressed (a flat-colour BMP may reach 50:1), a zip of zeros reaches 1000:1.
MAX_COMPRESSION_RATIO = 100
PACK_THREADS = 4  # shards packed and written at once


@dataclass(frozen=True)
class _Item:
    name: str
    digest: str | None = None
    format: str = ""
    width: int = 0
    height: int = 0
    reason: str | None = None


def safe_name(name: str, where: str) -> str:
    """The entry's name as a clean relative path; refuses path tricks outright."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchive(
            f"{where}: entry {name!r} has an absolute or non-POSIX path.",
            "Pack the images with relative paths (e.g. `cd folder && zip -r ../images.zip .`).",
        )
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeArchive(
            f"{where}: entry {name!r} points outside the archive.",
            "Remove entries with '..' from the archive.",
        )
    return "/".join(parts)


def archive_kind(head: bytes) -> str | None:
    """'zip', 'tar' or None, from a file's first 512 bytes."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(_COMPRESSED_MAGIC) or head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "tar"
    return None


class Collector:
    """Takes named files one at a time; spools each image to disk at once and remembers what it
    saw, so `manifest()` can order it and `write_shards` pack it. `close()` (or leaving a `with`
    block) removes the spool."""

    def __init__(self, limits: Limits, max_pixels: int) -> None:
        self.limits = limits
        self.max_pixels = min(max_pixels, limits.max_image_pixels)
        self.items: list[_Item] = []
        self.metadata: dict[str, str] = {}
        self.metadata_labels: dict[str, str] = {}
        self._names: set[str] = set()
        self._entries = 0
        self._expanded = 0
        self._images = 0
        # the images kept until `write_shards` packs them, one file each, named by its sha256
        self.spool = Path(tempfile.mkdtemp(prefix="neuron-atlas-upload-"))

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)

    # --- input ---------------------------------------------------------------------------------

    def add_file(self, name: str, data: bytes) -> None:
        """One file at `name` (already a safe relative path)."""
        if name in METADATA_NAMES:
            self._add_metadata(name, data)
            return
        if name in self._names:
            self.items.append(_Item(name, reason="the same file name was sent twice"))
            return
        self._names.add(name)
        try:
            fmt, width, height = inspect_image(data, self.max_pixels)
        except ValueError as exc:
            self.items.append(_Item(name, reason=str(exc)))
            return
        self._images += 1
        if self._images > self.limits.max_images:
            raise LimitExceeded(
                f"The submission holds more than {self.limits.max_images:,} images.",
                "Split it into several jobs.",
            )
        digest = sha256_bytes(data)
        self.items.append(_Item(name, digest, fmt, width, height))
        spooled = self.spool / digest
        if not spooled.exists():
            spooled.write_bytes(data)

    def add_upload(self, name: str, handle: IO[bytes]) -> None:
        """An uploaded part: an archive is unpacked, anything else is one file."""
        head = handle.read(512)
        handle.seek(0)
        kind = archive_kind(head)
        if kind == "zip":
            self._add_zip(name, handle)
        elif kind == "tar":
            self._add_tar(name, handle)
        else:
            name = safe_name(name, "upload")
            size = handle.seek(0, 2)
            handle.seek(0)
            if size > self.limits.max_file_bytes:
                self._too_large(name, size)
            else:
                self.add_file(name, handle.read())

    def _too_large(self, name: str, size: int) -> None:
        self._names.add(name)
        self.items.append(
            _Item(
                name,
                reason=f"{size:,} bytes, above the limit of {self.limits.max_file_bytes:,}; downscale it",
            )
        )

    def _add_metadata(self, name: str, data: bytes) -> None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"Captions file {name} is not UTF-8 text.", "Save it as UTF-8.") from None
        self.metadata.update(captions_from_text(text, Path(name)))
        self.metadata_labels.update(labels_from_text(text, Path(name)))

    def _count_entry(self, archive: str, size: int) -> None:
        self._entries += 1
        self._expanded += size
        if self._entries > self.limits.max_archive_entries:
            raise LimitExceeded(
                f"{archive}: more than {self.limits.max_archive_entries:,} archive entries.",
                "Split the archive into several jobs.",
            )
        if self._expanded > self.limits.max_expanded_bytes:
            raise LimitExceeded(
                f"{archive}: archives expand to more than {self.limits.max_expanded_bytes:,} bytes.",
                "Split the archive into several jobs.",
            )

    def _add_zip(self, archive: str, handle: IO[bytes]) -> None:
        try:
            with zipfile.ZipFile(handle) as zf:
                infos = zf.infolist()
                if self._entries + len(infos) > self.limits.max_archive_entries:
                    raise LimitExceeded(
                        f"{archive}: {len(infos):,} entries, above the limit of "
                        f"{self.limits.max_archive_entries:,}.",
                        "Split the archive into several jobs.",
                    )
                for info in infos:
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise UnsafeArchive(
                            f"{archive}: entry {info.filename!r} is a symbolic link.",
                            "Archive the files themselves, not links.",
                        )
                    name = safe_name(info.filename, archive)
                    if info.is_dir():
                        continue
                    self._count_entry(archive, info.file_size)
                    if info.flag_bits & 0x1:
                        self.items.append(_Item(name, reason="encrypted archive entry"))
                        continue
                    if info.file_size > self.limits.max_file_bytes:
                        self._too_large(name, info.file_size)  # never read: no memory spent on it
                        continue
                    if info.file_size > 2**20 and info.file_size > MAX_COMPRESSION_RATIO * max(
                        1, info.compress_size
                    ):
                        self.items.append(
                            _Item(name, reason=f"expands more than {MAX_COMPRESSION_RATIO}:1 (a zip bomb?)")
                        )
                        continue
                    with zf.open(info) as entry:
                        data = entry.read(info.file_size + 1)  # never more than declared, +1 to notice lies
                    if len(data) > info.file_size:
                        raise UnsafeArchive(f"{archive}: entry {name!r} is larger than it declares.")
                    self.add_file(name, data)
        except zipfile.BadZipFile as exc:
            raise InputError(f"{archive} is not a readable zip archive ({exc}).") from None

    def _add_tar(self, archive: str, handle: IO[bytes]) -> None:
        try:
            with tarfile.open(fileobj=handle, mode="r:*") as tf:
                for member in tf:
                    if member.issym() or member.islnk():
                        raise UnsafeArchive(
                            f"{archive}: entry {member.name!r} is a link.",
                            "Archive the files themselves, not links.",
                        )
                    name = safe_name(member.name, archive)
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise UnsafeArchive(
                            f"{archive}: entry {member.name!r} is a device or pipe, not a file.",
                            "Archive regular files only.",
                        )
                    self._count_entry(archive, member.size)
                    if member.size > self.limits.max_file_bytes:
                        self._too_large(name, member.size)
                        continue
                    extracted = tf.extractfile(member)
                    if extracted is None:
                        continue
                    self.add_file(name, extracted.read())
        except tarfile.TarError as exc:
            raise InputError(f"{archive} is not a readable tar archive ({exc}).") from None

    # --- output --------------------------------------------------------------------------------

    def manifest(self, captions: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
        """manifest.json in the embedded ingest's order (sorted paths) and duplicate rule (the
        first name in that order keeps the image). `captions` and `labels` win over metadata files."""
        provided = {**self.metadata, **captions}
        class_labels = {**self.metadata_labels, **(labels or {})}
        records: list[ImageRecord] = []
        skipped: list[SkippedFile] = []
        seen: dict[str, str] = {}
        for item in sorted(self.items, key=lambda i: tuple(i.name.split("/"))):
            if item.digest is None:
                skipped.append(SkippedFile(item.name, item.reason or "not an image"))
            elif item.digest in seen:
                skipped.append(duplicate(item.name, seen[item.digest]))
            else:
                seen[item.digest] = item.name
                records.append(
                    ImageRecord(item.digest, item.name, Path(item.name), item.format, item.width, item.height)
                )
        if not records:
            raise no_usable_images(
                "The submission",
                skipped,
                "Send JPEG, PNG, WebP, BMP or GIF images, as files or in zip/tar archives.",
            )
        unmatched = sorted(set(provided) - {i.name for i in self.items})
        if unmatched:
            log.warning("%d captions name no submitted file (first: %s)", len(unmatched), unmatched[:3])
        return manifest_document(records, skipped, provided, class_labels)

    def write_shards(
        self, put_file: Callable[[str, Path], None], manifest: dict[str, Any], shard_size: int
    ) -> None:
        """The manifest's images, `shard_size` to a pack in its order, written with `put_file`
        (`images/{shard}.zip`); the first failed write is raised."""
        images = manifest["images"]

        def write(shard: int) -> None:
            entries = images[shard * shard_size : (shard + 1) * shard_size]
            pack = self.spool / f"shard-{shard:05d}.zip"
            members = ((artifacts.image_member(e), (self.spool / e["id"]).read_bytes()) for e in entries)
            write_pack(pack, members)
            put_file(artifacts.images_pack_key(shard), pack)
            pack.unlink()

        with ThreadPoolExecutor(PACK_THREADS, thread_name_prefix="ingest-pack") as pool:
            for _ in pool.map(write, range(artifacts.shard_count(len(images), shard_size))):
                pass
