"""A LocalStore that counts its reads, as an S3 server would see them as requests: the pack
tests assert how many a reader makes."""

from __future__ import annotations

from shared.storage.stores import LocalStore


class CountingStore(LocalStore):
    requests = 0

    def size(self, key: str) -> int:
        self.requests += 1
        return super().size(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.requests += 1
        return super().get_range(key, offset, length)

    def get_bytes(self, key: str) -> bytes:
        self.requests += 1
        return super().get_bytes(key)
