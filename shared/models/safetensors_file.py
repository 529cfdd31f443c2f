"""Check a safetensors file without torch: the gateway refuses pickles and truncated or malformed
files at upload, before any worker spends time on them.

The format: 8 bytes little-endian header length N, N bytes of JSON header
(`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`), then the data.

The header is read under two caps, because it comes from a caller and is parsed in the gateway:
its size (`MAX_HEADER_BYTES`) bounds the memory and time of `json.loads`, and its nesting depth
(`MAX_DEPTH`, checked on the raw bytes before parsing) keeps a deeply nested document from
reaching the parser's recursion at all. A real header is flat: an object of tensor entries whose
deepest value is a shape list, three levels in all.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuron_atlas_client.errors import InputError

# The largest model in the zoos (timm's eva02 and vit_huge families, ~500 tensors) has a header
# of about 60 kB; 4 MiB leaves room for 40,000 tensors. At this cap `json.loads` takes ~0.1 s and
# a few tens of MB; the safetensors library's own cap (100 MB) cost the gateway 1.2 GB and 14 s.
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 3  # {entries} -> {dtype, shape, data_offsets} -> [dims]
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3"})
PICKLE_FIX = (
    "Neuron Atlas loads weights only from safetensors, which runs no code when loaded. Convert "
    "the checkpoint once: `from safetensors.torch import save_file; "
    "save_file(torch.load('model.pt', weights_only=True), 'model.safetensors')` (a state dict)."
)


class PickledWeights(InputError):
    """A pickled (torch.save) checkpoint: refused, since unpickling runs arbitrary code."""

    kind = "unsupported-weights-format"


@dataclass(frozen=True)
class SafetensorsSummary:
    tensors: int
    values: int  # numbers stored, buffers included
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)


def looks_pickled(head: bytes) -> bool:
    """torch.save writes a zip (PK..) or, in old versions, a bare pickle (protocol opcode 0x80)."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def nesting_depth(raw: bytes, chunk: int = 1 << 18) -> int:
    """The deepest nesting of objects and arrays in a JSON text, brackets inside strings left
    out. Vectorised over the bytes a chunk at a time (no parser, no recursion, no regular
    expression that could backtrack), so any text costs a few passes and a few MB."""
    deepest = depth = 0
    inside = False  # within a string at the chunk's start
    backslashes = 0  # the run of backslashes that ends the previous chunk
    for start in range(0, len(raw), chunk):
        text = np.frombuffer(raw, dtype=np.uint8, count=min(chunk, len(raw) - start), offset=start)
        index = np.arange(text.shape[0], dtype=np.int32)
        backslash = text == ord("\\")
        # a quote is escaped when an odd run of backslashes stands right before it
        last_other = np.maximum.accumulate(np.where(backslash, -1, index))
        run = np.where(last_other < 0, index + 1 + backslashes, index - last_other)  # run ending here
        run_before = np.concatenate(([backslashes], run[:-1]))
        quote = (text == ord('"')) & (run_before % 2 == 0)
        quotes_before = np.cumsum(quote, dtype=np.int32) - quote
        in_string = (quotes_before % 2 == 1) ^ inside
        step = ((text == ord("{")) | (text == ord("["))).astype(np.int8)
        step -= (text == ord("}")) | (text == ord("]"))
        step[in_string] = 0
        levels = np.cumsum(step, dtype=np.int32) + depth
        deepest = max(deepest, int(levels.max(initial=depth)))
        depth = int(levels[-1])
        inside ^= bool(np.count_nonzero(quote) % 2)
        backslashes = int(run[-1]) if backslash[-1] else 0
    return deepest


def _header(raw: bytes, name: str) -> dict[str, object]:
    if nesting_depth(raw) > MAX_DEPTH:
        raise InputError(
            f"{name} has no readable safetensors header (it nests deeper than a safetensors header does).",
            PICKLE_FIX,
        )
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InputError(f"{name} has no readable safetensors header.", PICKLE_FIX) from None
    if not isinstance(header, dict):
        raise InputError(f"{name} has no readable safetensors header.", PICKLE_FIX)
    return header


def check_safetensors(path: Path, file_name: str = "") -> SafetensorsSummary:
    """Raise an InputError that says what is wrong unless `path` is a whole safetensors file;
    the summary names every tensor's shape and dtype."""
    name = file_name or path.name
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if looks_pickled(head):
            raise PickledWeights(f"{name} is a pickled PyTorch checkpoint, not safetensors.", PICKLE_FIX)
        if len(head) < 8:
            raise InputError(f"{name} is too short to be a safetensors file ({size} bytes).", PICKLE_FIX)
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise InputError(
                f"{name} is not a whole safetensors file: its header claims {header_len} bytes "
                f"of a {size}-byte file.",
                "Upload the complete file saved by safetensors' save_file (was it truncated?).",
            )
        if header_len > MAX_HEADER_BYTES:
            raise InputError(
                f"{name} has a safetensors header of {header_len:,} bytes; at most "
                f"{MAX_HEADER_BYTES:,} are read (a model's header takes tens of kilobytes).",
                "Save the model's state dict itself with safetensors' save_file.",
            )
        header = _header(f.read(header_len), name)
    data_bytes, values = size - 8 - header_len, 0
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    end_max = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            assert isinstance(info, dict)
            begin, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
            count = math.prod(shape)
            width = DTYPE_BYTES[info["dtype"]]
        except (AssertionError, KeyError, TypeError, ValueError):
            raise InputError(f"{name}: tensor {key!r} has a malformed header entry.", PICKLE_FIX) from None
        if end - begin != count * width or begin < 0 or min(shape, default=0) < 0:
            raise InputError(f"{name}: tensor {key!r} has offsets that do not match its shape.", PICKLE_FIX)
        end_max = max(end_max, end)
        values += count
        shapes[key], dtypes[key] = shape, str(info["dtype"])
    if end_max != data_bytes:
        raise InputError(
            f"{name} is not a whole safetensors file: its tensors need {end_max} bytes of data and "
            f"the file holds {data_bytes}.",
            "Upload the complete file saved by safetensors' save_file (was it truncated?).",
        )
    if not shapes:
        raise InputError(f"{name} holds no tensors.", "Upload the model's state dict.")
    return SafetensorsSummary(len(shapes), values, shapes, dtypes)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
