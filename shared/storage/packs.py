"""Packs: many small objects kept as one zip per shard, members stored uncompressed (images and
WebP thumbnails do not compress further), so any zip tool opens one and a reader takes a member
with a ranged read. The suite keeps a job's uploaded images (`images/{shard}.zip`) and its
thumbnails (`thumbs/{shard}.zip`) so: on object storage each object is a request, about 2.2 ms of
CPU on the client and the server together, and one request per image was most of what the suite
spent over the embedded run (docs/performance.md, 'The suite').

A reader needs two requests for a pack's directory (its size, then its last 64 KB), then one
ranged read per member (`read_member`), or, reading a shard's members in order, one per 8 MB
window of the pack (`PackReader`)."""

from __future__ import annotations

import struct
import zipfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import BinaryIO, Protocol

# A fixed member time: a pack of the same members is the same bytes on every run.
MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


class RangeStore(Protocol):
    """What reading members out of a pack needs of a store."""

    def size(self, key: str) -> int: ...
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...


def write_pack(target: BinaryIO | Path, members: Iterable[tuple[str, bytes]]) -> None:
    """A zip of `(name, bytes)` members, stored uncompressed, into a file or a buffer."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as pack:
        for name, data in members:
            pack.writestr(zipfile.ZipInfo(name, MEMBER_TIME), data)


@dataclass(frozen=True)
class Span:
    """Where one member lies: its pack, its local header's offset there, its size."""

    key: str
    header: int
    size: int


_END = struct.Struct("<4s4H2LH")  # end of central directory record
_ENTRY = struct.Struct("<4s6H3L5H2L")  # central directory file header
_LOCAL = struct.Struct("<4s5H3L2H")  # local file header
_TAIL = 64 * 1024  # read at once from a pack's end: the directory of up to ~500 members


def pack_index(store: RangeStore, key: str) -> dict[str, Span]:
    """The members of the pack at `key` by name, from its central directory: one request for
    the size and one for the last 64 KB (a larger directory takes one more).
    `FileNotFoundError` when there is no such pack."""
    size = store.size(key)
    start = max(0, size - _TAIL)
    tail = store.get_range(key, start, size - start) if size > start else b""
    at = len(tail) - _END.size  # our packs carry no archive comment
    if at < 0 or tail[at : at + 4] != b"PK\x05\x06":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0:
        raise ValueError(f"{key} is not a zip")
    _, _, _, _, count, directory_size, directory_at, _ = _END.unpack_from(tail, at)
    if directory_at >= start:
        directory = tail[directory_at - start : directory_at - start + directory_size]
    else:
        directory = store.get_range(key, directory_at, directory_size)
    index, offset = {}, 0
    for _ in range(count):
        fields = _ENTRY.unpack_from(directory, offset)
        signature, method, packed = fields[0], fields[4], fields[8]
        name_length, extra_length, comment_length, header = fields[10], fields[11], fields[12], fields[16]
        name = directory[offset + _ENTRY.size : offset + _ENTRY.size + name_length].decode()
        offset += _ENTRY.size + name_length + extra_length + comment_length
        if signature != b"PK\x01\x02" or method != zipfile.ZIP_STORED:
            raise ValueError(f"{key} is not a pack of stored members (member {name!r})")
        index[name] = Span(key, header, packed)
    return index


def _member(window: bytes, at: int, span: Span) -> bytes | None:
    """The member whose local header starts at `window[at]`, or None if the window ends first."""
    if at + _LOCAL.size > len(window):
        return None
    name_length, extra_length = _LOCAL.unpack_from(window, at)[9:11]
    start = at + _LOCAL.size + name_length + extra_length
    return window[start : start + span.size] if start + span.size <= len(window) else None


def read_member(store: RangeStore, span: Span, name: str) -> bytes:
    """One member's bytes with one ranged read: its local header holds the directory's name and,
    in our packs, no extra field (a pack from another tool with one takes a second read)."""
    local = store.get_range(span.key, span.header, _LOCAL.size + len(name.encode()) + span.size)
    found = _member(local, 0, span)
    if found is not None:
        return found
    name_length, extra_length = _LOCAL.unpack_from(local)[9:11]
    return store.get_range(span.key, span.header + _LOCAL.size + name_length + extra_length, span.size)


class PackReader:
    """A pack's members for a reader that takes most of them in about their order (a shard's
    decoding, on several threads): the pack is fetched in windows of `window` bytes from the
    member asked for, the last two kept, so a shard of small images is one or two requests and
    a shard of large ones holds at most two windows (or two members) in memory."""

    def __init__(self, store: RangeStore, spans: dict[str, Span], window: int = 8 * 1024**2) -> None:
        self.store, self.spans, self.window = store, spans, window
        self._windows: deque[tuple[str, int, bytes]] = deque(maxlen=2)
        self._lock = Lock()
        self.requests = 0  # ranged reads made, for tests and benchmarks

    def read(self, name: str) -> bytes:
        """The member's bytes; `FileNotFoundError` when the pack has none of that name."""
        span = self.spans.get(name)
        if span is None:
            raise FileNotFoundError(f"no member {name!r} in the pack")
        with self._lock:
            for key, start, data in self._windows:
                if key == span.key and start <= span.header:
                    found = _member(data, span.header - start, span)
                    if found is not None:
                        return found
            length = max(self.window, 2 * _LOCAL.size + 2 * len(name.encode()) + span.size)
            data = self.store.get_range(span.key, span.header, length)
            self.requests += 1
            self._windows.append((span.key, span.header, data))
        found = _member(data, 0, span)
        return found if found is not None else read_member(self.store, span, name)
