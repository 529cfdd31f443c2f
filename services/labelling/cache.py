"""Answers of the endpoint, kept behind the shared `Store` interface (a local folder when
embedded, an object-storage prefix in the suite), keyed by (model, prompt version, input).

Re-labelling the same hierarchy with the same settings then sends nothing, and a re-run after
a crash pays only for the answers it had not received."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from shared.storage.stores import Store, get_json, put_json

log = logging.getLogger(__name__)


def cache_key(model: str, prompt_version: str, kind: str, request: Any) -> str:
    """The store key of one answer; the input is hashed, so keys stay short and carry no text."""
    payload = json.dumps(
        {"model": model, "prompt_version": prompt_version, "kind": kind, "input": request},
        sort_keys=True,
        ensure_ascii=False,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[:80] or "_"
    return f"{slug}/{prompt_version}/{digest[:2]}/{digest}.json"


class ResponseCache:
    """Validated answers under `prefix` in `store`."""

    def __init__(self, store: Store, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix

    def get(self, key: str) -> dict[str, Any] | None:
        full = self.prefix + key
        try:
            if not self.store.exists(full):
                return None
            entry = get_json(self.store, full)
        except (OSError, ValueError) as exc:  # a damaged entry costs one request, not the job
            log.warning("ignoring unreadable label cache entry %s: %s", full, exc)
            return None
        answer = entry.get("answer") if isinstance(entry, dict) else None
        return answer if isinstance(answer, dict) else None

    def put(self, key: str, answer: dict[str, Any], usage: dict[str, int]) -> None:
        try:
            put_json(self.store, self.prefix + key, {"answer": answer, "usage": usage})
        except OSError as exc:  # a cache that cannot be written must not fail the labels
            log.warning("could not write label cache entry %s: %s", self.prefix + key, exc)
