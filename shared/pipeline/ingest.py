"""Ingest: find the images of a submission, identify them by content, read captions it brings.

Bad files among good ones are never fatal: each is listed as skipped with the reason, so the
user sees exactly what was left out and why.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import threading
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from neuron_atlas_client.errors import InputError

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
DECODE_MIN_SIDE = 384
"""Images are decoded no smaller than this on either side: the largest input any model of the
pipeline resizes to (BLIP takes 384 x 384, ResNet18's transform resizes the shorter side to
256). A JPEG larger than twice this decodes at 1/2, 1/4 or 1/8 scale (Pillow's draft mode):
a 12-megapixel photo decodes in a tenth of the time, and the models never see the lost detail."""
CAPTION_COLUMNS = ("caption", "text")


@dataclass(frozen=True)
class ImageRecord:
    """One accepted image: `id` is the sha256 of its bytes."""

    id: str
    file_name: str
    path: Path
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class SkippedFile:
    file_name: str
    reason: str
    duplicate_of: str | None = None  # the file name that kept these bytes


def duplicate(file_name: str, kept: str) -> SkippedFile:
    return SkippedFile(file_name, f"same bytes as {kept} (duplicate)", kept)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every PNG


def _is_zip(data: bytes) -> bool:
    """A zip's end-of-central-directory record that the zip module can read, in the last 64 kB
    (where zip readers look). Its structure is checked, so photo data rarely looks like one."""
    if b"PK\x05\x06" not in data[-(65_536 + 22) :]:
        return False
    return zipfile.is_zipfile(io.BytesIO(data))


def inspect_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Read the header only; return (format, width, height) or raise ValueError with a reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = (image.format or "unknown"), image.size
    except UnidentifiedImageError:
        raise ValueError("not an image (no known image format in its bytes)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"image too large to decode safely (over {max_pixels} pixels)") from None
    except OSError as exc:
        raise ValueError(f"unreadable image header: {exc}") from None
    if fmt == "PNG" and PNG_END in data and not data.rstrip(b"\0").endswith(PNG_END):
        # A PNG ends with its IEND chunk; bytes after it are another file riding along (a zip
        # appended to an image is the classic way to smuggle one past an image check).
        raise ValueError("data after the end of the PNG image (another file appended?); re-export it")
    if fmt != "PNG" and _is_zip(data):
        raise ValueError("an archive is appended to this image; re-export the image on its own")
    if width * height > max_pixels:
        raise ValueError(
            f"image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,}; downscale it or raise max_image_pixels"
        )
    return fmt.lower(), width, height


def decode_image(data: bytes, min_side: int | None = DECODE_MIN_SIDE) -> Image.Image:
    """Decode to RGB at a reduced scale, never under `min_side` on either side (JPEG decodes at
    that scale; other formats are reduced right after decoding); full size when `min_side` is
    None. Raises ValueError naming the problem for truncated or corrupt files."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if min_side is not None:
                image.draft("RGB", (min_side, min_side))  # never below the requested size
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image could not be decoded ({exc}); re-export or remove it") from None
    if min_side is not None and min(rgb.size) >= 2 * min_side:
        # Formats without a draft mode (PNG, WebP, BMP) are reduced the same way right after
        # decoding, by a whole factor that keeps both sides at least `min_side`: a shard of
        # 7000 x 7000 PNGs then holds 0.4-megapixel images, not 49-megapixel ones.
        rgb = rgb.reduce(min(rgb.size) // min_side)
    return rgb


def scan_image_folder(folder: Path, max_pixels: int) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """All files below `folder` (sorted, recursive): images accepted, everything else skipped."""
    if not folder.exists():
        raise InputError(f"Image folder {folder} does not exist.", "Check the path and try again.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.", "Pass a folder that holds the images.")
    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    seen: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name in METADATA_NAMES:
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(SkippedFile(name, f"cannot read file: {exc.strerror or exc}"))
            continue
        try:
            fmt, width, height = inspect_image(data, max_pixels)
        except ValueError as exc:
            skipped.append(SkippedFile(name, str(exc)))
            continue
        digest = sha256_bytes(data)
        if digest in seen:
            skipped.append(duplicate(name, seen[digest]))
            continue
        seen[digest] = name
        records.append(ImageRecord(digest, name, path, fmt, width, height))
    if not records:
        raise no_usable_images(
            f"Image folder {folder}",
            skipped,
            "Add JPEG, PNG, WebP, BMP or GIF images to it (subfolders are searched too).",
        )
    return records, skipped


def no_usable_images(where: str, skipped: Sequence[SkippedFile], fix: str) -> InputError:
    """The error for a submission without one usable image, listing why files were refused."""
    what = f"{len(skipped)} files, none of them a usable image" if skipped else "no files"
    detail = "".join(f"\n  {s.file_name}: {s.reason}" for s in skipped[:10])
    return InputError(f"{where} holds {what}.{detail}", fix)


def _rows_from_csv(text: str) -> Iterable[dict[str, str]]:
    return csv.DictReader(io.StringIO(text))


def _rows_from_jsonl(text: str, source: Path) -> Iterable[dict[str, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{source} line {number} is not valid JSON ({exc.msg}).",
                "Each line must be one JSON object with file_name and caption.",
            ) from None
        if not isinstance(row, dict):
            raise InputError(f"{source} line {number} is not a JSON object.", "Fix that line.")
        yield row


def _metadata_text(source: Path) -> str:
    try:
        return source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"Cannot read captions file {source}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise InputError(f"Captions file {source} is not UTF-8 text.", "Save it as UTF-8.") from None


def read_captions(source: Path) -> dict[str, str]:
    """Captions from an imagefolder-style metadata file: `file_name` plus `caption` or `text`."""
    return captions_from_text(_metadata_text(source), source)


def read_labels(source: Path) -> dict[str, str]:
    """Class labels from the same metadata file's optional `label` column (see labels_from_text)."""
    return labels_from_text(_metadata_text(source), source)


def labels_from_text(text: str, source: Path) -> dict[str, str]:
    """`file_name -> label` from a metadata file's optional `label` column or field: the target
    model's class index of the image, which lets the input check and the pruning curve measure
    top-1 accuracy."""
    rows: Iterable[dict[str, str]] = (
        _rows_from_jsonl(text, source) if source.suffix == ".jsonl" else _rows_from_csv(text)
    )
    labels: dict[str, str] = {}
    for row in rows:
        label = row.get("label")
        if "file_name" in row and label is not None and str(label).strip():
            labels[str(row["file_name"]).strip().lstrip("./")] = str(label).strip()
    return labels


LABEL_FILE_FIX = (
    'Give a CSV with a header "file_name,label" and one row per image, or a JSON object '
    '{"file_name": label, ...}; each label is the target model\'s class index of the image.'
)


def read_label_file(source: Path) -> dict[str, str]:
    """`--labels FILE`: class labels from a CSV (`file_name,label`) or a JSON object mapping file
    name to label. A malformed file is an InputError that says what is wrong, never a partial read."""
    if source.suffix.lower() not in (".csv", ".json"):
        raise InputError(f"Labels file {source} is neither .csv nor .json.", LABEL_FILE_FIX)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        problem = f"Cannot read labels file {source}: {exc.strerror or exc}."
        raise InputError(problem, "Check the path given to --labels.") from None
    except UnicodeDecodeError:
        raise InputError(f"Labels file {source} is not UTF-8 text.", "Save it as UTF-8.") from None
    is_json = source.suffix.lower() == ".json"
    labels = _labels_from_json(text, source) if is_json else _labels_from_csv(text, source)
    if not labels:
        raise InputError(f"Labels file {source} holds no labels.", LABEL_FILE_FIX)
    return labels


def _labels_from_csv(text: str, source: Path) -> dict[str, str]:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "file_name" not in columns or "label" not in columns:
        raise InputError(
            f"Labels file {source} needs a header with file_name and label columns; found "
            f"{columns or 'no header'}.",
            LABEL_FILE_FIX,
        )
    reader.fieldnames = columns
    labels: dict[str, str] = {}
    for row in reader:
        name, label = (row.get("file_name") or "").strip(), (row.get("label") or "").strip()
        if not name or not label:
            raise InputError(
                f"Labels file {source} line {reader.line_num} has "
                f"{'no file_name' if not name else 'no label'}.",
                "Give every row a file name and a label, or remove the row.",
            )
        labels[name.lstrip("./")] = label
    return labels


def _labels_from_json(text: str, source: Path) -> dict[str, str]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"Labels file {source} is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}).",
            LABEL_FILE_FIX,
        ) from None
    if not isinstance(document, dict):
        raise InputError(
            f"Labels file {source} holds a JSON {type(document).__name__}, not an object.", LABEL_FILE_FIX
        )
    labels: dict[str, str] = {}
    for name, label in document.items():
        # bool is an int to Python; true/false is no class index
        if isinstance(label, bool) or not isinstance(label, int | str) or not str(label).strip():
            raise InputError(
                f"Labels file {source}: the label of {name!r} is {json.dumps(label)}, not a class "
                "index or name.",
                LABEL_FILE_FIX,
            )
        labels[name.strip().lstrip("./")] = str(label).strip()
    return labels


def captions_from_text(text: str, source: Path) -> dict[str, str]:
    """Captions from the text of a metadata file named `source` (.csv or .jsonl)."""
    if source.suffix == ".jsonl":
        rows: Iterable[dict[str, str]] = _rows_from_jsonl(text, source)
    elif source.suffix == ".csv":
        rows = _rows_from_csv(text)
    else:
        raise InputError(
            f"Captions file {source} is neither .csv nor .jsonl.",
            "Use metadata.csv or metadata.jsonl with file_name and caption columns.",
        )
    captions: dict[str, str] = {}
    for row in rows:
        column = next((c for c in CAPTION_COLUMNS if c in row), None)
        if "file_name" not in row or column is None:
            raise InputError(
                f"Captions file {source} needs a file_name column and a caption (or text) column; "
                f"found {sorted(row)}.",
                "Rename the columns to file_name and caption.",
            )
        caption = str(row[column] or "").strip()
        if caption:
            captions[str(row["file_name"]).strip().lstrip("./")] = caption
    return captions


def find_caption_file(folder: Path) -> Path | None:
    """The imagefolder convention: metadata.csv or metadata.jsonl at the folder's top."""
    for name in METADATA_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def manifest_document(
    records: Iterable[ImageRecord],
    skipped: Iterable[SkippedFile],
    provided: dict[str, str],
    labels: dict[str, str] | None = None,
) -> dict[str, object]:
    """manifest.json: accepted images in order (with any caption and class label they brought)
    and skipped files.

    Of files with the same bytes the first in sorted order keeps the image; a caption or label
    given only for a later copy goes with it, so a copy that sorts first does not lose it."""
    skipped = list(skipped)
    provided = dict(provided)
    labels = dict(labels or {})
    for s in skipped:
        if s.duplicate_of is None:
            continue
        for given in (provided, labels):
            if s.duplicate_of not in given and s.file_name in given:
                given[s.duplicate_of] = given[s.file_name]
    return {
        "images": [
            {
                "id": r.id,
                "file_name": r.file_name,
                "format": r.format,
                "width": r.width,
                "height": r.height,
                "caption": provided.get(r.file_name),
            }
            | ({"label": labels[r.file_name]} if r.file_name in labels else {})
            for r in records
        ],
        "skipped": [{"file_name": s.file_name, "reason": s.reason} for s in skipped],
    }


DECODE_PIXEL_BUDGET = 100_000_000
"""Default for how many pixels a worker decodes at once, summed over its decoding threads (about
300 MB of RGB before each image is reduced); `DECODE_PIXEL_BUDGET` sets a worker's."""


class PixelBudget:
    """Pixels in flight across decoding threads: a decode waits until its image's pixels fit.
    An image larger than the whole budget decodes alone, so none waits forever."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self._in_flight = 0
        self._free = threading.Condition()

    @contextmanager
    def held(self, pixels: int) -> Iterator[None]:
        pixels = min(max(pixels, 1), self.pixels)
        with self._free:
            self._free.wait_for(lambda: self._in_flight + pixels <= self.pixels)
            self._in_flight += pixels
        try:
            yield
        finally:
            with self._free:
                self._in_flight -= pixels
                self._free.notify_all()


def decode_entries(
    entries: Iterable[dict[str, Any]],
    read_bytes: Callable[[dict[str, Any]], bytes],
    pixel_budget: int = DECODE_PIXEL_BUDGET,
) -> tuple[list[dict[str, Any]], list[Image.Image], list[dict[str, str]]]:
    """Decode a shard's manifest entries: (entries kept, their images, skipped with reasons).
    Decoded on a few threads (Pillow releases the GIL while it decodes and converts), with at
    most `pixel_budget` pixels (the manifest's width x height) being decoded at once.

    The bytes are read on their own threads (`READ_THREADS`), at most `READ_AHEAD` images
    ahead of the decoding: a read from object storage waits a few milliseconds for its answer,
    which the suite paid image after image when the decoding threads read. Decoding stays on
    `decode_threads()` threads: every thread that decodes a large image keeps its own malloc
    arena of freed pixel blocks, so 8 decoding threads (even 2 at a time) took a worker
    decoding 7000 x 7000 PNGs to 2.8 GB (tests/services/gateway/test_memory_bounds.py)."""
    budget = PixelBudget(pixel_budget)

    def read(entry: dict[str, Any]) -> bytes | str:
        try:
            return read_bytes(entry)
        except (ValueError, OSError) as exc:
            return str(exc)

    def decode(entry: dict[str, Any], data: Future[bytes | str]) -> Image.Image | str:
        got = data.result()
        if isinstance(got, str):
            return got
        try:
            with budget.held(int(entry.get("width", 0)) * int(entry.get("height", 0))):
                return decode_image(got)
        except (ValueError, OSError) as exc:
            return str(exc)

    entries = list(entries)
    results: list[Image.Image | str] = []
    with ThreadPoolExecutor(READ_THREADS) as readers, ThreadPoolExecutor(decode_threads()) as decoders:
        reads = {i: readers.submit(read, entries[i]) for i in range(min(READ_AHEAD, len(entries)))}
        decoding: deque[Future[Image.Image | str]] = deque()
        for i, entry in enumerate(entries):
            decoding.append(decoders.submit(decode, entry, reads.pop(i)))
            if len(decoding) >= READ_AHEAD:  # bytes of at most 2 x READ_AHEAD images held
                results.append(decoding.popleft().result())
            if i + READ_AHEAD < len(entries):
                reads[i + READ_AHEAD] = readers.submit(read, entries[i + READ_AHEAD])
        results.extend(future.result() for future in decoding)
    kept, images, skipped = [], [], []
    for entry, result in zip(entries, results, strict=True):
        if isinstance(result, str):
            skipped.append({"file_name": str(entry["file_name"]), "reason": result})
        else:
            images.append(result)
            kept.append(entry)
    return kept, images, skipped


READ_THREADS = 8
READ_AHEAD = 8


def decode_threads() -> int:
    """One decoding thread per core this process may use (a container's CPU set, not the node's)."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


@dataclass(frozen=True)
class DecodedShard:
    """One shard of the job's images, decoded once: what every per-shard stage starts from."""

    index: int
    entries: list[dict[str, Any]]  # the shard's manifest entries, decodable or not
    kept: list[dict[str, Any]]  # the entries that decoded, in order
    images: list[Image.Image]  # their images (none from `undecoded_shard`)
    skipped: list[dict[str, str]]  # the entries that did not decode, with the reason


def decode_shard(
    manifest: dict[str, Any],
    shard: int,
    shard_size: int,
    read_bytes: Callable[[dict[str, Any]], bytes],
    pixel_budget: int = DECODE_PIXEL_BUDGET,
) -> DecodedShard:
    """Shard `shard` of the manifest (the same slices for every stage), decoded."""
    entries = list(manifest["images"][shard * shard_size : (shard + 1) * shard_size])
    kept, images, skipped = decode_entries(entries, read_bytes, pixel_budget)
    return DecodedShard(shard, entries, kept, images, skipped)


def undecoded_shard(manifest: dict[str, Any], shard: int, shard_size: int) -> DecodedShard:
    """Shard `shard` without its pixels, for a stage that needs none (a caption shard whose
    captions were all provided): every entry kept, no image. Which images decode is then
    decided by the activation branch alone (`artifacts.write_undecodable`)."""
    entries = list(manifest["images"][shard * shard_size : (shard + 1) * shard_size])
    return DecodedShard(shard, entries, entries, [], [])
