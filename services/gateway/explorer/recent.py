"""The few most recently used explorer indexes and comparison views, kept in the gateway's
memory: each is built from a job's hierarchy.json (seconds for a large job), then answers every
page request from memory. Thread-safe: the gateway answers from several threads."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from threading import Lock
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """At most `size` values; the least recently used goes first."""

    def __init__(self, size: int = 4) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = Lock()
        self._making: dict[K, Lock] = {}

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value at `key`, made by `make()` on a miss. Requests that miss together (a page asks
        for several answers at once) wait for the first one's `make` instead of repeating it."""
        found = self.get(key)
        if found is not None:
            return found
        with self._lock:
            making = self._making.setdefault(key, Lock())
        with making:
            found = self.get(key)
            if found is None:
                found = make()
                self.put(key, found)
            with self._lock:
                self._making.pop(key, None)
        return found
