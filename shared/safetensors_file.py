"""Check a safetensors file without torch: the gateway refuses pickles and truncated or malformed
files at upload, before any worker spends time on them.

The format: 8 bytes little-endian header length N, N bytes of JSON header
(`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`), then the data.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from shared.errors import InputError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
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


def looks_pickled(head: bytes) -> bool:
    """torch.save writes a zip (PK..) or, in old versions, a bare pickle (protocol opcode 0x80)."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def check_safetensors(path: Path, file_name: str = "") -> SafetensorsSummary:
    """Raise an InputError that says what is wrong unless `path` is a whole safetensors file."""
    name = file_name or path.name
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if looks_pickled(head):
            raise PickledWeights(f"{name} is a pickled PyTorch checkpoint, not safetensors.", PICKLE_FIX)
        if len(head) < 8:
            raise InputError(f"{name} is too short to be a safetensors file ({size} bytes).", PICKLE_FIX)
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise InputError(
                f"{name} is not a whole safetensors file: its header claims {header_len} bytes "
                f"of a {size}-byte file.",
                "Upload the complete file saved by safetensors' save_file (was it truncated?).",
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{name} has no readable safetensors header.", PICKLE_FIX) from None
    if not isinstance(header, dict):
        raise InputError(f"{name} has no readable safetensors header.", PICKLE_FIX)
    data_bytes, tensors, values = size - 8 - header_len, 0, 0
    end_max = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            count = math.prod(int(d) for d in info["shape"])
            width = DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{name}: tensor {key!r} has a malformed header entry.", PICKLE_FIX) from None
        if end - begin != count * width or begin < 0:
            raise InputError(f"{name}: tensor {key!r} has offsets that do not match its shape.", PICKLE_FIX)
        end_max = max(end_max, end)
        tensors += 1
        values += count
    if end_max != data_bytes:
        raise InputError(
            f"{name} is not a whole safetensors file: its tensors need {end_max} bytes of data and "
            f"the file holds {data_bytes}.",
            "Upload the complete file saved by safetensors' save_file (was it truncated?).",
        )
    if tensors == 0:
        raise InputError(f"{name} holds no tensors.", "Upload the model's state dict.")
    return SafetensorsSummary(tensors, values)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
