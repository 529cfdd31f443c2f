"""Uploads become the same manifest as the embedded ingest of the same folder; archives with
tricks are refused."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from neuron_atlas_client.errors import InputError
from services.gateway.uploads import Collector, LimitExceeded, Limits, UnsafeArchive, archive_kind, safe_name
from shared.pipeline.ingest import find_caption_file, manifest_document, read_captions, scan_image_folder

LIMITS = Limits(max_images=100, max_image_pixels=10**8, max_archive_entries=100, max_expanded_bytes=10**8)


def collector(limits: Limits = LIMITS) -> Collector:
    return Collector(limits, max_pixels=10**8)


def packed(c: Collector, manifest: dict[str, Any], shard_size: int) -> dict[str, dict[str, bytes]]:
    """What `write_shards` writes: each pack's members, by key."""
    stored: dict[str, dict[str, bytes]] = {}

    def put_file(key: str, path: Path) -> None:
        with zipfile.ZipFile(path) as pack:
            stored[key] = {name: pack.read(name) for name in pack.namelist()}

    c.write_shards(put_file, manifest, shard_size)
    return stored


def test_uploaded_folder_gives_the_embedded_manifest(sample_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted(sample_dir.iterdir())[:7]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "metadata.csv").write_bytes((sample_dir / "metadata.csv").read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "copy.png").write_bytes(sorted(sample_dir.glob("*.png"))[0].read_bytes())  # duplicate
    (folder / "notes.txt").write_text("not an image")
    records, skipped = scan_image_folder(folder, 10**8)
    expected = manifest_document(records, skipped, read_captions(find_caption_file(folder)))  # type: ignore[arg-type]

    with collector() as c:
        for path in sorted(folder.rglob("*"), reverse=True):  # any order in: the manifest orders it
            if path.is_file():
                c.add_file(path.relative_to(folder).as_posix(), path.read_bytes())
        assert c.manifest({}) == expected
        stored = packed(c, expected, shard_size=3)
        spool = c.spool
    # a pack per shard of 3, in the manifest's order, each image as the user sent it
    images = expected["images"]
    # written on threads, so in any order
    assert sorted(stored) == [f"images/{k:05d}.zip" for k in range(-(-len(images) // 3))]
    assert [name for key in sorted(stored) for name in stored[key]] == [f"{i['id']}.png" for i in images]
    for image in images:
        shard = stored[f"images/{images.index(image) // 3:05d}.zip"]
        assert shard[f"{image['id']}.png"] == (folder / image["file_name"]).read_bytes()
    assert not spool.exists()  # the spool goes with the collector


def test_spec_captions_win_over_metadata_files(sample_dir: Path) -> None:
    png = sorted(sample_dir.glob("*.png"))[0]
    c = collector()
    c.add_file("metadata.csv", f"file_name,caption\n{png.name},from file\n".encode())
    c.add_file(png.name, png.read_bytes())
    assert c.manifest({png.name: "from spec"})["images"][0]["caption"] == "from spec"


def test_class_labels_reach_the_manifest_and_spec_labels_win(sample_dir: Path) -> None:
    first, second = sorted(sample_dir.glob("*.png"))[:2]
    c = collector()
    c.add_file("metadata.csv", f"file_name,caption,label\n{first.name},a,1\n{second.name},b,2\n".encode())
    c.add_file(first.name, first.read_bytes())
    c.add_file(second.name, second.read_bytes())
    images = c.manifest({}, {second.name: "5"})["images"]
    assert [i["label"] for i in images] == ["1", "5"]
    assert "label" not in collector_without_labels(first)["images"][0]


def collector_without_labels(png: Path) -> dict[str, Any]:
    with collector() as c:
        c.add_file(png.name, png.read_bytes())
        return c.manifest({})


@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "/abs.png", "C:/x.png", "a\\b.png", ""])
def test_path_tricks_are_refused(name: str) -> None:
    with pytest.raises(UnsafeArchive):
        safe_name(name, "a.zip")


def test_clean_names_are_normalised() -> None:
    assert safe_name("./a//b/./c.png", "a.zip") == "a/b/c.png"


def test_tar_hard_links_are_refused(sample_dir: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        png = sorted(sample_dir.glob("*.png"))[0]
        tf.add(png, arcname="a.png")
        link = tarfile.TarInfo("b.png")
        link.type, link.linkname = tarfile.LNKTYPE, "a.png"
        tf.addfile(link)
    buffer.seek(0)
    with pytest.raises(UnsafeArchive, match="link"):
        collector().add_upload("a.tar", buffer)


def test_archive_bombs_are_stopped_by_the_expanded_size_limit() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.png", b"\0" * 2_000_000)  # compresses to a few KB
    buffer.seek(0)
    small = Limits(
        max_images=10, max_image_pixels=10**8, max_archive_entries=10, max_expanded_bytes=1_000_000
    )
    with pytest.raises(LimitExceeded, match="expand"):
        collector(small).add_upload("bomb.zip", buffer)


def test_archives_are_recognised_by_content_not_name(sample_dir: Path) -> None:
    png = sorted(sample_dir.glob("*.png"))[0].read_bytes()
    assert archive_kind(png[:512]) is None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo("x.png")
        info.size = len(png)
        tf.addfile(info, io.BytesIO(png))
    assert archive_kind(buffer.getvalue()[:512]) == "tar"


def test_images_above_the_pixel_limit_are_skipped_with_the_reason(sample_dir: Path) -> None:
    pngs = sorted(sample_dir.glob("*.png"))[:2]
    small = Limits(max_images=10, max_image_pixels=50 * 50, max_archive_entries=10, max_expanded_bytes=10**8)
    c = collector(small)
    c.add_file("metadata.csv", b"file_name,caption\n")
    for png in pngs:
        c.add_file(png.name, png.read_bytes())  # 96 x 96 sample images
    with pytest.raises(InputError, match="above the limit"):
        c.manifest({})
    assert not any(c.spool.iterdir())  # never kept


def test_too_many_images_are_refused() -> None:
    tiny = Limits(max_images=1, max_image_pixels=10**8, max_archive_entries=10, max_expanded_bytes=10**8)
    c = collector(tiny)
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    c.add_file("a.png", png.getvalue())
    with pytest.raises(LimitExceeded, match="more than 1 images"):
        c.add_file("b.png", png.getvalue())
    c.close()


def zeros_zip(name: str, size: int) -> bytes:
    """A zip holding `size` bytes of zeros under `name`, written in pieces (a tiny file)."""
    buffer, info = io.BytesIO(), zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buffer, "w") as archive, archive.open(info, "w", force_zip64=True) as entry:
        piece = bytes(2**20)
        for _ in range(size // 2**20):
            entry.write(piece)
    return buffer.getvalue()


def test_entries_above_the_file_limit_or_a_bomb_ratio_are_skipped_unread(sample_dir: Path) -> None:
    png = sorted(sample_dir.glob("*.png"))[0]
    limits = Limits(
        max_images=10,
        max_image_pixels=10**8,
        max_archive_entries=10,
        max_expanded_bytes=10**9,
        max_file_bytes=8 * 2**20,
    )
    c = collector(limits)
    c.add_upload("big.zip", io.BytesIO(zeros_zip("huge.png", 16 * 2**20)))  # above the file limit
    c.add_upload("bomb.zip", io.BytesIO(zeros_zip("bomb.png", 4 * 2**20)))  # 4 MiB at about 1000:1
    c.add_upload("too-big.png", io.BytesIO(bytes(9 * 2**20)))
    c.add_upload(png.name, io.BytesIO(png.read_bytes()))
    reasons = {item.name: item.reason for item in c.items}
    assert "above the limit of 8,388,608" in str(reasons["huge.png"])
    assert "zip bomb" in str(reasons["bomb.png"])
    assert "above the limit" in str(reasons["too-big.png"])
    assert reasons[png.name] is None and len(list(c.spool.iterdir())) == 1  # only the image is kept
    c.close()


def test_the_api_spec_takes_a_labels_map_beside_captions() -> None:
    from neuron_atlas_client.contracts.api import JobSpec

    spec = JobSpec.model_validate({"captions": {"a.png": "a cat"}, "labels": {"a.png": "281"}})
    assert spec.labels == {"a.png": "281"}
    assert JobSpec().labels == {}
