"""The gateway's own reading of a caller's safetensors header: bounded in size and depth."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from neuron_atlas_client.errors import InputError
from shared.models.safetensors_file import MAX_HEADER_BYTES, check_safetensors, nesting_depth


def depth_by_walking(raw: bytes) -> int:
    """The same rule one character at a time: a quote after an odd run of backslashes is
    escaped, and brackets between unescaped quotes are in a string."""
    depth = deepest = run = 0
    inside = False
    for c in raw.decode("latin-1"):
        if c == '"' and run % 2 == 0:
            inside = not inside
        elif not inside and c in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif not inside and c in "}]":
            depth -= 1
        run = run + 1 if c == "\\" else 0
    return deepest


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet='{}[]"\\ab:,', max_size=80), chunk=st.integers(1, 9))
def test_nesting_depth_agrees_with_a_walk_over_the_text_whatever_the_chunking(text: str, chunk: int) -> None:
    raw = text.encode()
    assert nesting_depth(raw, chunk) == depth_by_walking(raw)


def test_nesting_depth_of_real_and_hostile_headers() -> None:
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "__metadata__": {"k": "[{"}}
    assert nesting_depth(json.dumps(header).encode()) == 3
    assert nesting_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000
    assert nesting_depth(b'"\\"' * 100_000) == 0  # a regular expression would backtrack here


def write(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def test_a_real_file_is_summarised_with_shapes_and_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.int8)}, str(path))
    summary = check_safetensors(path)
    assert summary.tensors == 2 and summary.values == 10
    assert summary.shapes == {"a": (2, 3), "b": (4,)} and summary.dtypes == {"a": "F32", "b": "I8"}


def test_a_deeply_nested_header_is_refused_without_recursion(tmp_path: Path) -> None:
    path = write(tmp_path / "m.safetensors", b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InputError, match="nests deeper"):
        check_safetensors(path)


def test_a_header_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    header = b" " * (MAX_HEADER_BYTES + 1)
    path = write(tmp_path / "m.safetensors", header)
    with pytest.raises(InputError, match="at most"):
        check_safetensors(path)
